"""Regression targets on the 8 cells around each object centre (`ros-fusion train --reg-spread W`).

CenterPoint trains the box regression at the centre cell only and decodes it at the heatmap peak.
When the peak lands one feature cell (1.6 m) off, which a heatmap trained on a few hundred real
frames often does, the decoded offset is one the network was never taught and the box is off by
about a cell: on the Astyx validation frames the centre error of matched cars was ~0.7 m while the
training-free detector placed the same cars within ~0.3 m. Teaching every neighbour of a centre the
offset from *its own* corner to the true centre (dx' = dx + i − i', the other channels unchanged)
makes a near-miss peak still decode the right box. TTFNet (Liu et al., AAAI 2020) regresses over the
whole Gaussian area for the same reason. Neighbours carry weight W in the loss; a cell next to two
centres takes the nearer one; a centre cell is never overwritten.
"""

from __future__ import annotations

import numpy as np

from ..core import network_io as nio

_DX, _DY = nio.REG_CHANNELS.index("dx"), nio.REG_CHANNELS.index("dy")
_NEIGHBOURS = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)], np.int64)


def spread_regression(reg_target: np.ndarray, reg_mask: np.ndarray, weight: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(B×R×H×W targets, B×H×W weights) with each centre's box also taught to its 8 neighbours (new arrays)."""
    if not weight > 0:
        return reg_target, reg_mask
    reg, mask = reg_target.copy(), reg_mask.astype(np.float32, copy=True)
    b, i, j = np.nonzero(reg_mask > 0)
    if not len(b):
        return reg, mask
    B, _, H, W = reg.shape
    k = np.repeat(np.arange(len(b)), len(_NEIGHBOURS))
    ni = i[k] + np.tile(_NEIGHBOURS[:, 0], len(b))
    nj = j[k] + np.tile(_NEIGHBOURS[:, 1], len(b))
    ok = (ni >= 0) & (ni < H) & (nj >= 0) & (nj < W)
    k, ni, nj = k[ok], ni[ok], nj[ok]
    free = reg_mask[b[k], ni, nj] <= 0
    k, ni, nj = k[free], ni[free], nj[free]
    # the object centre in cell units, and its distance to each neighbour's cell centre
    cx = i[k] + reg_target[b[k], _DX, i[k], j[k]]
    cy = j[k] + reg_target[b[k], _DY, i[k], j[k]]
    dist = np.hypot(cx - (ni + 0.5), cy - (nj + 0.5))
    order = np.argsort(dist, kind="stable")
    cell = (b[k] * H + ni) * W + nj
    _, first = np.unique(cell[order], return_index=True)
    pick = order[first]
    k, ni, nj = k[pick], ni[pick], nj[pick]
    src = reg_target[b[k], :, i[k], j[k]]  # (n, R)
    src[:, _DX] = cx[pick] - ni
    src[:, _DY] = cy[pick] - nj
    reg[b[k], :, ni, nj] = src
    mask[b[k], ni, nj] = weight
    return reg, mask
