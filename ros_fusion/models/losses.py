"""Training losses of the CenterPoint head: focal loss on heatmaps, L1 on regression at object cells.

Both take a `cell_mask` (B×H×W, 1 = counts): cells no present modality covers are
left out, so a camera-only sample is not punished for missing an object behind
the car that the camera cannot see (modality dropout would otherwise teach the
head to hallucinate or to give up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Per-channel weights of the regression loss, in `network_io.REG_CHANNELS` order (dx dy z
#: log_l log_w log_h sin cos vx vy): CenterPoint's nuScenes recipe (Yin et al., CVPR 2021,
#: `code_weights`) — velocity from a single sweep is weakly observable, so it weighs 0.2.
REG_CHANNEL_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2)


@dataclass
class LossWeights:
    heatmap: float = 1.0
    regression: float = 0.25
    channels: tuple[float, ...] = REG_CHANNEL_WEIGHTS


def focal_loss(logits: torch.Tensor, target: torch.Tensor, cell_mask: torch.Tensor | None = None,
               alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of object centres.

    logits, target: B×K×H×W; target is 1 at object centres and a Gaussian bump around
    them. Computed from log-sigmoid for stability (no log(0) at saturated logits).
    """
    logp = torch.nn.functional.logsigmoid(logits)
    log1mp = torch.nn.functional.logsigmoid(-logits)
    p = logp.exp()
    pos = (target >= 0.999).float()
    neg = 1.0 - pos
    pos_loss = -logp * (1 - p) ** alpha * pos
    neg_loss = -log1mp * p**alpha * (1 - target).clamp(min=0) ** beta * neg
    loss = pos_loss + neg_loss
    if cell_mask is not None:
        m = cell_mask[:, None]
        loss = loss * m
        pos = pos * m
    return loss.sum() / pos.sum().clamp(min=1.0)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, object_mask: torch.Tensor,
                    cell_mask: torch.Tensor | None = None,
                    channel_weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """Per object, the channel-weighted SUM of L1 errors; averaged over object-centre cells.

    object_mask B×H×W is 1 at centres. Summed over channels, not averaged (v1 averaged,
    which made the offset terms 10× weaker than CenterPoint's and left centres ~0.5 m off).
    """
    m = object_mask if cell_mask is None else object_mask * cell_mask
    n = m.sum().clamp(min=1.0)
    err = (pred - target).abs()
    if channel_weights is not None:
        if len(channel_weights) != pred.shape[1]:
            raise ValueError(f"{len(channel_weights)} channel weights for {pred.shape[1]} regression channels")
        err = err * torch.tensor(channel_weights, dtype=pred.dtype, device=pred.device)[None, :, None, None]
    return (err * m[:, None]).sum() / n


def detection_loss(out: dict[str, torch.Tensor], heatmap_target: torch.Tensor, reg_target: torch.Tensor,
                   reg_mask: torch.Tensor, cell_mask: torch.Tensor | None = None,
                   weights: LossWeights | None = None) -> dict[str, torch.Tensor]:
    """{'total', 'heatmap', 'regression'} for one batch of network outputs."""
    w = weights or LossWeights()
    hm = focal_loss(out["heatmap"], heatmap_target, cell_mask)
    reg = regression_loss(out["regression"], reg_target, reg_mask, cell_mask, w.channels)
    return {"total": w.heatmap * hm + w.regression * reg, "heatmap": hm, "regression": reg}
