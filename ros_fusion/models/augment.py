"""Training-time augmentation of pre-processed samples (`ros-fusion train --p-mirror`).

A real dataset is small (the Astyx training split is 340 frames), and the
network overfits it within a few epochs. The lateral mirror (y → −y) is the
augmentation that stays exact on the rasters the network sees, so it needs no
re-rasterising of points: every raster is flipped along its y (column) axis and
the few signed quantities are negated. What stays unchanged, and why:

- LiDAR and radar channels are scalars per cell; radial (Doppler) velocity is
  invariant under a reflection (the range to a mirrored point changes as the
  range to the original does);
- camera images are not flipped: `cam_grid` holds, for each BEV feature cell, the
  image position to sample, so flipping `cam_grid` with the BEV keeps each
  object's camera features on the object's (mirrored) cell;
- regression: the centre offset within a cell `dy` becomes 1 − dy (cells are
  indexed from the grid edge and the y range is symmetric, `network_io`), and
  sin(yaw) and vy change sign;
- IMU: a reflection through the x–z plane negates the y component of a polar
  vector (acceleration) and the x and z components of an axial one (angular rate).

CenterPoint (Yin et al., CVPR 2021) and BEVFusion train with the same flips.
"""

from __future__ import annotations

import numpy as np

from ..core import network_io as nio

#: Regression channels whose sign flips under y → −y.
_NEGATED_REG = tuple(nio.REG_CHANNELS.index(c) for c in ("sin_yaw", "vy"))
_DY = nio.REG_CHANNELS.index("dy")
#: IMU columns [gyro xyz, acc xyz] whose sign flips under y → −y.
_NEGATED_IMU = (0, 2, 4)


def mirror_lateral(batch: dict[str, np.ndarray], rng: np.random.Generator, p: float) -> dict[str, np.ndarray]:
    """Mirror each sample of a batch across the x–z plane with probability `p` (new arrays).

    Works on the keys of `network_io.input_specs` and the training targets; keys it
    does not know (ground-truth tables, stamps) pass through unchanged, so it must run
    before anything that reads boxes in metres from them.
    """
    if not p > 0:
        return batch
    n = len(batch["lidar_bev"])
    flip = rng.random(n) < p
    if not flip.any():
        return batch
    out = dict(batch)
    # Column (y) axis of every raster: last for C×H×W, 3 of 4 for the per-camera grids.
    for key, axis in (("lidar_bev", -1), ("radar_bev", -1), ("coverage", -1), ("heatmap_target", -1),
                      ("reg_target", -1), ("reg_mask", -1), ("cam_valid", -1), ("cam_grid", -2)):
        if key not in batch:
            continue
        a = batch[key].copy()
        a[flip] = np.flip(a[flip], axis=axis)
        out[key] = a
    if "reg_target" in out:
        reg = out["reg_target"]
        reg[flip, _DY] = 1.0 - reg[flip, _DY]
        for c in _NEGATED_REG:
            reg[flip, c] = -reg[flip, c]
    if "imu" in batch:
        imu = batch["imu"].copy()
        for c in _NEGATED_IMU:
            imu[flip, :, c] = -imu[flip, :, c]
        out["imu"] = imu
    return out
