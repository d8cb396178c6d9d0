"""Training loop (`ros-fusion train`): shards in, checkpoints out (docs/DESIGN.md §7).

Data: `.npz` shards, every array with a leading sample axis, keyed by the
`network_io` input names plus the targets `TARGET_KEYS` (the dataset generator in
`sim/dataset.py` writes them; `synthetic_shard` here makes a toy one for tests).
Images may be stored as uint8 RGB (N×cams×3×H×W); they are normalised here with
the contract's mean/std, exactly as the runtime pre-processing does.

What the loop guarantees:
- modality dropout: every sample sees one non-empty subset of {camera, lidar,
  radar} (the full set with probability `p_all`, else uniform over the other six),
  so the masked fusion and the per-modality head are trained, not hoped for;
- previous-sweep dropout: with probability `p_no_prev_sweep` a sample's older LiDAR
  sweep is blanked, as the runtime sends it after a gap or at start-up;
- optional lateral mirror (`p_mirror`, `augment.mirror_lateral`): each sample is
  flipped y → −y with that probability, exact on the rasters, for small real datasets;
- optional regression on the 8 cells around each centre (`reg_spread`, weight of those
  cells in the loss; `reg_spread.spread_regression`), so a peak one cell off still
  decodes the right box;
- optional single-modality auxiliary losses (`aux_single`, `aux_weight`): the shared
  head also runs on one modality's features alone, every step, on every sample that
  has that sensor — dropout alone gives camera-only ~9 % of the samples, too little
  signal for the weakest encoder (late fusion runs exactly that path);
- optional start from another checkpoint's weights (`init`: fine-tuning; fresh
  optimiser and schedule, the source recorded in the provenance);
- deterministic for a seed: shard order, shuffling and dropout come from
  numpy Generators seeded by (seed, epoch), weights from torch.manual_seed(seed);
- resumable at epoch granularity from `last.pt` (model, optimiser, scheduler,
  epoch, history); `best.pt` keeps the lowest validation loss;
- BatchNorm statistics re-estimated at the end of every epoch over many batches
  across shards ("precise BN", `precise_batchnorm`), so validation and the saved
  checkpoints normalise with the training distribution, not with the last shard's;
- CPU first: `torch.set_num_threads` defaults to the cores this process may use;
  CUDA is used when available unless `device="cpu"`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import network_io as nio
from .augment import mirror_lateral
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, saved_net_config
from .losses import LossWeights, detection_loss
from .network import PARTS, FusionNet, NetConfig, parameter_count
from .reg_spread import spread_regression

#: Target arrays in a shard (per sample): heatmap K×64×64 in [0, 1], regression R×64×64, centre mask 64×64.
TARGET_KEYS = ("heatmap_target", "reg_target", "reg_mask")
#: Other spellings of the target arrays accepted in shards (first found wins).
TARGET_ALIASES: dict[str, tuple[str, ...]] = {
    "heatmap_target": ("heatmap_target", "target_heatmap", "hm_target"),
    "reg_target": ("reg_target", "target_regression", "regression_target"),
    "reg_mask": ("reg_mask", "target_mask", "mask_target"),
}
INPUT_KEYS = tuple(s.name for s in nio.input_specs(1))
M = len(nio.FUSED_MODALITIES)
#: Every non-empty subset of the fused modalities, as presence vectors; index 0 is the full set.
SUBSETS: tuple[tuple[int, ...], ...] = tuple(
    sorted((tuple((k >> i) & 1 for i in range(M)) for k in range(1, 2**M)), key=lambda s: -sum(s))
)


class DataError(ValueError):
    """A shard is missing, unreadable or does not match the network contract."""


# --- data -----------------------------------------------------------------------------------


def _as_float_images(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        mean = np.asarray(nio.CAM_MEAN, np.float32)[:, None, None]
        std = np.asarray(nio.CAM_STD, np.float32)[:, None, None]
        return (a.astype(np.float32) / 255.0 - mean) / std
    return a.astype(np.float32, copy=False)


class ShardDataset:
    """A list of `.npz` shards read one at a time (a whole dataset does not fit in RAM)."""

    def __init__(self, files: list[Path]) -> None:
        if not files:
            raise DataError("no shards given")
        self.files = [Path(f) for f in files]
        self.sizes = []
        self.meta: list[dict[str, Any]] = []
        for f in self.files:
            if not f.is_file():
                raise DataError(f"shard {f} not found")
            with np.load(f, allow_pickle=False) as z:
                missing = [k for k in INPUT_KEYS if k not in z.files]
                missing += [k for k in TARGET_KEYS if not any(a in z.files for a in TARGET_ALIASES[k])]
                if missing:
                    raise DataError(f"shard {f.name}: missing arrays {missing}")
                self.sizes.append(int(z["lidar_bev"].shape[0]))
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
                self.meta.append(meta if isinstance(meta, dict) else {})

    @classmethod
    def from_dir(cls, root: Path, split: str) -> ShardDataset:
        """Shards of one split: `root/<split>/*.npz`, else `root/<split>*.npz`."""
        files = sorted((root / split).glob("*.npz")) or sorted(root.glob(f"{split}*.npz"))
        if not files:
            raise DataError(f"no {split} shards under {root} (expected {root}/{split}/*.npz)")
        return cls(files)

    @classmethod
    def from_dirs(cls, roots: Sequence[Path], split: str) -> ShardDataset:
        """The shards of one split from several dataset folders, e.g. the same drives seen by two rigs."""
        if not roots:
            raise DataError("no dataset folders given")
        return cls([f for root in roots for f in cls.from_dir(Path(root), split).files])

    def __len__(self) -> int:
        return sum(self.sizes)

    def load(self, i: int) -> dict[str, np.ndarray]:
        with np.load(self.files[i], allow_pickle=False) as z:
            arrays = {k: z[k] for k in INPUT_KEYS}
            for k in TARGET_KEYS:
                arrays[k] = z[next(a for a in TARGET_ALIASES[k] if a in z.files)].astype(np.float32, copy=False)
        arrays["images"] = _as_float_images(arrays["images"])
        n = self.sizes[i]
        for spec in nio.input_specs(arrays["images"].shape[1]):
            a = arrays[spec.name]
            if a.shape != (n, *spec.shape):
                raise DataError(f"shard {self.files[i].name}: {spec.name} has shape {a.shape}, "
                                f"expected {(n, *spec.shape)}")
            arrays[spec.name] = a.astype(np.float32, copy=False)
        return arrays

    def batches(self, batch_size: int, rng: np.random.Generator | None) -> Iterator[dict[str, np.ndarray]]:
        """Batches in shard order (shuffled shards and samples when `rng` is given)."""
        order = rng.permutation(len(self.files)) if rng is not None else np.arange(len(self.files))
        for i in order:
            arrays = self.load(int(i))
            idx = rng.permutation(self.sizes[i]) if rng is not None else np.arange(self.sizes[i])
            for s in range(0, len(idx), batch_size):
                sel = idx[s : s + batch_size]
                yield {k: v[sel] for k, v in arrays.items()}

    def provenance(self) -> dict[str, Any]:
        seeds = sorted({int(s) for m in self.meta for s in np.atleast_1d(m.get("seeds", m.get("seed", [])))})
        scenarios = sorted({str(s) for m in self.meta for s in np.atleast_1d(m.get("scenarios",
                                                                                     m.get("scenario", [])))})
        rigs = sorted({str(m["rig"]) for m in self.meta if "rig" in m})
        # Shard names repeat across dataset folders (one drive, two rigs): name the folder when there are several.
        several = len({f.parent for f in self.files}) > 1
        shards = [f"{f.parent.parent.name}/{f.name}" if several else f.name for f in self.files]
        return {"shards": shards, "samples": len(self), "seeds": seeds, "scenarios": scenarios, "rigs": rigs}


def synthetic_shard(path: Path, n: int, seed: int) -> Path:
    """A toy shard with the contract's shapes where the inputs really predict the targets.

    Boxes become blobs in the LiDAR and radar rasters and bright patches in the image
    (at the columns `cam_grid` maps their cells to); camera covers x > 0 only. For tests
    and the smoke model: proves the loop learns, says nothing about real accuracy.
    """
    rng = np.random.default_rng(seed)
    f = nio.FEAT
    nz = len(nio.CAM_Z_LEVELS)
    k, r = len(nio.CLASSES), len(nio.REG_CHANNELS)
    out = {s.name: np.zeros((n, *s.shape), np.float32) for s in nio.input_specs(1)}
    hm = np.zeros((n, k, f, f), np.float32)
    reg = np.zeros((n, r, f, f), np.float32)
    mask = np.zeros((n, f, f), np.float32)
    ii, jj = np.meshgrid(np.arange(f), np.arange(f), indexing="ij")
    # camera: cell (i, j) in front of the car projects to image column from j, row from height.
    front = ii >= f // 2
    for z in range(nz):
        out["cam_grid"][:, 0, z, ..., 0] = np.where(front, (jj + 0.5) / f * 2 - 1, -2)
        out["cam_grid"][:, 0, z, ..., 1] = np.where(front, 0.5 - z / nz, -2)
        out["cam_valid"][:, 0, z] = front
    out["coverage"][:, 0] = front
    out["coverage"][:, 1:] = 1.0
    out["present"][:] = 1.0
    out["images"][:] = rng.normal(0, 0.3, out["images"].shape)
    out["imu"][:] = rng.normal(0, 0.05, out["imu"].shape) + np.array([0, 0, 0, 0, 0, 9.81], np.float32)
    for s in range(n):
        for _ in range(rng.integers(2, 7)):
            c = int(rng.integers(0, k))
            fi, fj = rng.uniform(4, f - 4, 2)
            ci, cj = int(fi), int(fj)
            size = 1 + c % 3
            i0, j0 = 2 * ci - size, 2 * cj - size
            sl = (slice(max(i0, 0), 2 * ci + size + 1), slice(max(j0, 0), 2 * cj + size + 1))
            out["lidar_bev"][s, 0][sl] = 0.6 + 0.05 * c
            out["lidar_bev"][s, 1][sl] = 0.2 + 0.1 * c
            out["lidar_bev"][s, 5 + c % 3][sl] = 1.0
            nch = len(nio.LIDAR_SWEEP_CHANNELS)  # previous sweep: the same (static) blob
            out["lidar_bev"][s, nch:][:, sl[0], sl[1]] = out["lidar_bev"][s, :nch][:, sl[0], sl[1]]
            if rng.random() < 0.8:
                out["radar_bev"][s, 0, 2 * ci, 2 * cj] = 1.0
                out["radar_bev"][s, 1, 2 * ci, 2 * cj] = 0.3 + 0.1 * c
            if ci >= f // 2:
                col = int((cj + 0.5) / f * nio.CAM_W)
                out["images"][s, 0, c % 3, nio.CAM_H // 4 : nio.CAM_H // 2, max(col - 6, 0) : col + 6] = 2.0
            gauss = np.exp(-((ii - ci) ** 2 + (jj - cj) ** 2) / (2 * 1.0**2))
            hm[s, c] = np.maximum(hm[s, c], gauss)
            hm[s, c, ci, cj] = 1.0
            yaw = rng.uniform(-np.pi, np.pi)
            reg[s, :, ci, cj] = [fi - ci, fj - cj, 0.8, np.log(4.0), np.log(1.8), np.log(1.6),
                                 np.sin(yaw), np.cos(yaw), 0.0, 0.0]
            mask[s, ci, cj] = 1.0
    meta = json.dumps({"synthetic": True, "seed": seed})
    np.savez_compressed(path, **out, heatmap_target=hm, reg_target=reg, reg_mask=mask, meta=np.array(meta))
    return path


# --- training --------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    data: Path | tuple[Path, ...]  # one dataset folder or several (their shards are pooled)
    out: Path
    epochs: int = 20
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-2
    schedule: str = "onecycle"  # or "cosine"
    seed: int = 0
    p_all: float = 0.4  # probability a sample keeps all modalities
    p_no_prev_sweep: float = 0.1  # probability a sample's previous LiDAR sweep is blanked
    p_mirror: float = 0.0  # probability a sample is mirrored y -> -y (augment.mirror_lateral)
    reg_spread: float = 0.0  # loss weight of the 8 neighbours of each centre (reg_spread.spread_regression); 0: off
    max_steps: int | None = None  # stop early (smoke runs, tests); shortens the schedule
    until_epoch: int | None = None  # pause after this epoch with the schedule still planned for `epochs`
    threads: int | None = None
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    grad_clip: float = 5.0
    precise_bn_batches: int = 300  # BatchNorm statistics re-estimated over this many batches per epoch (0: off)
    aux_single: tuple[str, ...] = ()  # modalities whose features alone also go through the head every step
    aux_weight: float = 0.5  # weight of each auxiliary single-modality loss in the total
    init: Path | None = None  # start from this checkpoint's weights (fine-tuning); optimiser starts fresh
    train_only: tuple[str, ...] = ()  # network parts (`PARTS`) to train, the rest frozen; () = all
    net: NetConfig = field(default_factory=NetConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        data = [str(p) for p in self.datasets]
        d["data"], d["out"] = data[0] if len(data) == 1 else data, str(self.out)
        d["aux_single"] = list(self.aux_single)
        d["init"] = None if self.init is None else str(self.init)
        d["train_only"] = list(self.train_only)
        return d

    @property
    def datasets(self) -> tuple[Path, ...]:
        """The dataset folders, always as a tuple."""
        return (Path(self.data),) if isinstance(self.data, (str, Path)) else tuple(Path(d) for d in self.data)

    def frozen_parts(self) -> list[str]:
        """The network parts `train_only` leaves out (checks the names)."""
        unknown = [p for p in self.train_only if p not in PARTS]
        if unknown:
            raise ValueError(f"train_only: unknown network parts {unknown}; choose from {list(PARTS)}")
        return [p for p in PARTS if self.train_only and p not in self.train_only]

    def aux(self) -> dict[str, float]:
        """{modality: weight} of the auxiliary single-modality losses; checks the names."""
        unknown = [m for m in self.aux_single if m not in nio.FUSED_MODALITIES]
        if unknown:
            raise ValueError(f"aux_single: unknown modalities {unknown}; choose from {list(nio.FUSED_MODALITIES)}")
        if self.aux_single and not self.aux_weight > 0:
            raise ValueError(f"aux_weight must be > 0 when aux_single is set, got {self.aux_weight}")
        return {m: self.aux_weight for m in dict.fromkeys(self.aux_single)}


def dropout_presence(present: np.ndarray, rng: np.random.Generator, p_all: float) -> np.ndarray:
    """Apply modality dropout to a B×M presence batch: each sample keeps one non-empty subset.

    A subset that would leave a sample with nothing (the data itself lacks those sensors)
    falls back to the sample's own presence.
    """
    out = present.copy()
    for b in range(present.shape[0]):
        subset = SUBSETS[0] if rng.random() < p_all else SUBSETS[int(rng.integers(1, len(SUBSETS)))]
        kept = present[b] * np.asarray(subset, np.float32)
        out[b] = kept if kept.any() else present[b]
    return out


def dropout_previous_sweep(lidar_bev: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Blank the previous-sweep channels of a B×C×H×W LiDAR batch with probability `p` per sample.

    The runtime has no previous sweep for the first sweep and after a gap
    (`is_previous_sweep`); this is how the network learns that input. Returns a new array.
    """
    out = lidar_bev.copy()
    nch = len(nio.LIDAR_SWEEP_CHANNELS)
    drop = rng.random(out.shape[0]) < p
    out[drop, nch:] = 0.0
    return out


def _to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def _masked_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], present: torch.Tensor,
                 weights: LossWeights | None) -> dict[str, torch.Tensor]:
    cell_mask = (batch["coverage"] * present[:, :, None, None]).amax(dim=1)
    return detection_loss(out, batch["heatmap_target"], batch["reg_target"], batch["reg_mask"], cell_mask, weights)


def batch_loss(net: FusionNet, batch: dict[str, torch.Tensor], weights: LossWeights | None = None,
               aux: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Forward one batch and its loss, on the cells that some present modality covers.

    `aux` {modality: weight}: the encoders run once, then the head also runs on that
    modality's features alone (presence from `present_data`, the data's own presence
    before dropout, else `present`) and its loss, on that modality's coverage, is added
    to 'total' with the weight; it is also returned as 'aux_<modality>'.
    """
    feats = net.encode(batch)
    losses = _masked_loss(net.fuse_and_detect(feats, batch["coverage"], batch["present"]), batch, batch["present"],
                          weights)
    if not aux:
        return losses
    has = batch.get("present_data", batch["present"])
    total = losses["total"]
    for name, w in aux.items():
        m = nio.FUSED_MODALITIES.index(name)
        only = torch.zeros_like(has)
        only[:, m] = has[:, m]
        single = _masked_loss(net.fuse_and_detect(feats, batch["coverage"], only), batch, only, weights)
        losses[f"aux_{name}"] = single["total"]
        total = total + w * single["total"]
    losses["total"] = total
    return losses


def precise_batchnorm(net: FusionNet, data: ShardDataset, *, batches: int, batch_size: int,
                      rng: np.random.Generator, p_all: float, device: torch.device,
                      p_no_prev_sweep: float = 0.0) -> int:
    """Re-estimate every BatchNorm's running mean/var as a plain average over `batches` batches.

    Why: with batch 4 and momentum 0.1 the running statistics are an average of the last
    ~10 batches of the epoch, and those come from one or two shards (one drive, one scenario)
    — what validation then normalises with changes from epoch to epoch. "Precise BN"
    (Wu & Johnson 2021, "Rethinking Batch in BatchNorm") instead averages over many batches
    drawn across shards, with the same modality and previous-sweep dropout as training. No weight changes.
    Returns the number of batches used.
    """
    bns = [m for name, part in net.named_children() if name not in net.frozen
           for m in part.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return 0
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = plain mean over the batches seen
    per_shard = max(1, math.ceil(batches / len(data.files)))
    used = 0
    was_training = net.training
    net.train()
    with torch.no_grad():
        for i in rng.permutation(len(data.files)):
            if used >= batches:
                break
            arrays = data.load(int(i))
            idx = rng.permutation(data.sizes[i])
            for s in range(0, min(len(idx), per_shard * batch_size), batch_size):
                if used >= batches:
                    break
                b = {k: v[idx[s : s + batch_size]] for k, v in arrays.items()}
                b["present"] = dropout_presence(b["present"], rng, p_all)
                b["lidar_bev"] = dropout_previous_sweep(b["lidar_bev"], rng, p_no_prev_sweep)
                net(_to_torch(b, device))
                used += 1
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    net.train(was_training)
    return used


def evaluate_loss(net: FusionNet, data: ShardDataset, batch_size: int, device: torch.device,
                  weights: LossWeights | None = None) -> dict[str, float]:
    """Mean validation losses with every modality the data has (no dropout)."""
    net.eval()
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for b in data.batches(batch_size, None):
            losses = batch_loss(net, _to_torch(b, device), weights)
            k = len(b["present"])
            for name, v in losses.items():
                sums[name] = sums.get(name, 0.0) + float(v) * k
            n += k
    net.train()
    return {name: v / max(n, 1) for name, v in sums.items()}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU")
    return torch.device(name)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def save_checkpoint(path: Path, net: FusionNet, opt: torch.optim.Optimizer, sched: Any, *, epoch: int, step: int,
                    cfg: TrainConfig, provenance: dict[str, Any], history: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "net_config": net.cfg.to_dict(),
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch,
        "step": step,
        "train_config": cfg.to_dict(),
        "provenance": provenance,
        "history": history,
    }, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def _init_weights(net: FusionNet, path: Path) -> dict[str, Any]:
    """Load `path`'s weights into `net` (same network config) and say where they came from.

    The one allowed difference: `net` adds the gate context the source lacks. That layer
    starts at zero, so the network computes exactly what the source did until it trains.
    """
    from ..core.files import sha256_file

    src = load_checkpoint(path)
    adds_context = net.cfg.gate_context and not src.model.cfg.gate_context
    if replace(src.model.cfg, gate_context=net.cfg.gate_context) != net.cfg or (
            src.model.cfg.gate_context and not net.cfg.gate_context):
        raise ValueError(f"--init {path}: network {src.model.cfg.to_dict()} does not match {net.cfg.to_dict()}")
    result = net.load_state_dict(src.model.state_dict(), strict=not adds_context)
    if adds_context and (result.unexpected_keys or any(not k.startswith("fusion.gate_ctx.")
                                                       for k in result.missing_keys)):
        raise ValueError(f"--init {path}: weights do not fit: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")
    prov = src.provenance
    earlier = prov.get("init_from", {})  # a chain of fine-tunes: the first weights saw those seeds too

    def seen(part: str) -> list[int]:
        return sorted({int(s) for s in [*prov.get(part, {}).get("seeds", []), *earlier.get(f"{part}_seeds", [])]})

    out = {"checkpoint": str(path), "sha256": sha256_file(Path(path)), "epoch": src.epoch, "step": src.step,
           "train_seeds": seen("train"), "val_seeds": seen("val")}
    if adds_context:
        out["added"] = "fusion.gate_ctx (zero-initialised)"
    return out


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def train(cfg: TrainConfig, *, resume: bool = False, log: Any = print) -> dict[str, Any]:
    """Train (or resume) into `cfg.out`; returns {'history', 'provenance', 'checkpoint', 'parameters'}."""
    torch.set_num_threads(cfg.threads or default_threads())
    device = pick_device(cfg.device)
    train_data = ShardDataset.from_dirs(cfg.datasets, "train")
    val_data = ShardDataset.from_dirs(cfg.datasets, "val")
    cfg.out.mkdir(parents=True, exist_ok=True)
    aux = cfg.aux()
    frozen = cfg.frozen_parts()
    torch.manual_seed(cfg.seed)
    net = FusionNet(cfg.net)
    init_from = _init_weights(net, cfg.init) if cfg.init is not None else None
    if frozen and init_from is None:
        raise ValueError(f"train_only {list(cfg.train_only)} needs --init: the frozen parts {frozen} "
                         "would keep their random weights")
    net.freeze(frozen)
    net = net.to(device)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    if cfg.schedule == "onecycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1),
                                                         pct_start=0.15)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    else:
        raise ValueError(f"schedule must be 'onecycle' or 'cosine', got {cfg.schedule!r}")
    provenance = {
        "train": train_data.provenance(),
        "val": val_data.provenance(),
        "train_config": cfg.to_dict(),
        "torch": str(torch.__version__),
        "device": str(device),
    }
    if init_from is not None:
        provenance["init_from"] = init_from
    history: list[dict[str, Any]] = []
    epoch = step = 0
    last = cfg.out / "last.pt"
    if resume and last.is_file():
        state = torch.load(last, map_location=device, weights_only=True)
        saved_net = saved_net_config(state)
        if saved_net != cfg.net.to_dict():
            raise ValueError(f"{last} was trained with network {saved_net}, not {cfg.net.to_dict()}")
        saved = state.get("train_config", {})
        saved_loss = saved.get("loss")
        if saved_loss is not None and json.dumps(saved_loss) != json.dumps(asdict(cfg.loss)):
            raise ValueError(f"{last} was trained with loss weights {saved_loss}, not {asdict(cfg.loss)}")
        saved_aux = {m: saved.get("aux_weight", 0.0) for m in saved.get("aux_single", [])}
        if saved_aux != aux:
            raise ValueError(f"{last} was trained with auxiliary losses {saved_aux or 'none'}, not {aux or 'none'}")
        if list(saved.get("train_only", [])) != list(cfg.train_only):
            raise ValueError(f"{last} was trained with train_only {saved.get('train_only', [])}, "
                             f"not {list(cfg.train_only)}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch, step, history = state["epoch"], state["step"], state.get("history", [])
        log(f"resumed from {last}: epoch {epoch}, step {step}")
    best = min((h["val"]["total"] for h in history), default=math.inf)
    net.train()
    with _progress(cfg.progress) as bar:
        task = bar.add_task("train", total=total, completed=step, losses="")
        while epoch < min(cfg.epochs, cfg.until_epoch or cfg.epochs) and step < total:
            rng = np.random.default_rng([cfg.seed, epoch])
            torch.manual_seed(int(hashlib.sha256(f"{cfg.seed}/{epoch}".encode()).hexdigest()[:8], 16))
            sums = {"total": 0.0, "heatmap": 0.0, "regression": 0.0} | {f"aux_{m}": 0.0 for m in aux}
            n = 0
            t0 = time.perf_counter()
            for b in train_data.batches(cfg.batch_size, rng):
                if step >= total:
                    break
                b = mirror_lateral(b, rng, cfg.p_mirror)
                b["reg_target"], b["reg_mask"] = spread_regression(b["reg_target"], b["reg_mask"], cfg.reg_spread)
                b["present_data"] = b["present"]
                b["present"] = dropout_presence(b["present"], rng, cfg.p_all)
                b["lidar_bev"] = dropout_previous_sweep(b["lidar_bev"], rng, cfg.p_no_prev_sweep)
                losses = batch_loss(net, _to_torch(b, device), cfg.loss, aux)
                opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                step += 1
                n += 1
                for k in sums:
                    sums[k] += float(losses[k].detach())
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs}",
                           losses=f"loss {sums['total'] / n:.3f} (hm {sums['heatmap'] / n:.3f} "
                                  f"reg {sums['regression'] / n:.3f}"
                                  + "".join(f" {k} {sums[k] / n:.3f}" for k in sums if k.startswith("aux_")) + ")")
            epoch += 1
            # Own generator: the training order and dropout stay exactly as without this step.
            precise_batchnorm(net, train_data, batches=cfg.precise_bn_batches, batch_size=cfg.batch_size,
                              rng=np.random.default_rng([cfg.seed, epoch, 1]), p_all=cfg.p_all, device=device,
                              p_no_prev_sweep=cfg.p_no_prev_sweep)
            val = evaluate_loss(net, val_data, cfg.batch_size, device, cfg.loss)
            record = {"epoch": epoch, "step": step, "train": {k: v / max(n, 1) for k, v in sums.items()},
                      "val": val, "seconds": time.perf_counter() - t0}
            history.append(record)
            aux_text = "".join(f" {k} {v:.4f}" for k, v in record["train"].items() if k.startswith("aux_"))
            bar.console.print(f"epoch {epoch}: train {record['train']['total']:.4f}{aux_text}  val {val['total']:.4f} "
                              f"(hm {val['heatmap']:.4f} reg {val['regression']:.4f})  {record['seconds']:.0f} s")
            save_checkpoint(last, net, opt, sched, epoch=epoch, step=step, cfg=cfg, provenance=provenance,
                            history=history)
            if val["total"] < best:
                best = val["total"]
                save_checkpoint(cfg.out / "best.pt", net, opt, sched, epoch=epoch, step=step, cfg=cfg,
                                provenance=provenance, history=history)
    return {"history": history, "provenance": provenance, "checkpoint": last, "parameters": parameter_count(net)}
