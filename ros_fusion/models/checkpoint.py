"""A training checkpoint on disk: its format tag, and loading one back as a network in eval mode.

Apart from the training loop because three layers read checkpoints — `export` (to ONNX),
fine-tuning (`train --init`) and the development `torch` backend in `runtime/backends` — and the
backend must not pull in the training code to do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .network import FusionNet, NetConfig

#: The `format` entry of every checkpoint `train` writes.
CHECKPOINT_FORMAT = "ros_fusion-checkpoint/1"


@dataclass
class Checkpoint:
    model: FusionNet
    epoch: int
    step: int
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    state: dict[str, Any]


def saved_net_config(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's network config; those from before `gate_context` existed have the purely local gate."""
    return {"gate_context": 0, **state.get("net_config", {})}


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of a bad file, reported as one clear line
        raise ValueError(f"{path} is not a readable ros_fusion checkpoint: {type(e).__name__}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a ros_fusion training checkpoint")
    net = FusionNet(NetConfig(**saved_net_config(state)))
    net.load_state_dict(state["model"])
    net.eval()
    history = state.get("history", [])
    metrics = {"val_loss": history[-1].get("val", {}) if history else {}, "epochs": state["epoch"],
               "steps": state["step"]}
    return Checkpoint(net, state["epoch"], state["step"], state.get("provenance", {}), metrics, state)
