"""The IMU input of the network: the recent past resampled on a fixed clock (docs/DESIGN.md §7).

IMUs publish at 100–400 Hz with jitter and the occasional gap; the network
wants `IMU_WINDOW` rows at `IMU_HZ` ending at the fusion time T, in base_link
axes (so a rig with a rotated IMU feeds the same numbers). Rows are
[gyro x y z (rad/s), specific force x y z (m/s²)], SI, gravity included — the
model normalises. Only samples stamped at or before T are used (nothing from
the future leaks into a live frame); before the first / after the last sample
the nearest one is held. Non-finite samples are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import network_io as nio
from .types import NS_PER_S, ImuSample


def imu_window(samples: Sequence[ImuSample], t_ns: int, extrinsic: np.ndarray | None = None,
               window: int = nio.IMU_WINDOW, hz: float = nio.IMU_HZ) -> np.ndarray:
    """(window, 6) float32 at times T − (window−1−k)/hz, k = 0 … window−1; zeros if no usable sample.

    `extrinsic` maps imu_link → base_link (only its rotation is applied: the
    lever-arm terms are small at vehicle yaw rates and the model sees them anyway).
    """
    out = np.zeros((window, nio.IMU_CHANNELS), np.float32)
    rows = []
    stamps = []
    for s in samples:
        if s.stamp_ns > t_ns:
            continue
        w = np.asarray(s.angular_velocity, np.float64).reshape(-1)
        a = np.asarray(s.linear_acceleration, np.float64).reshape(-1)
        if w.shape != (3,) or a.shape != (3,) or not (np.isfinite(w).all() and np.isfinite(a).all()):
            continue
        rows.append(np.concatenate([w, a]))
        stamps.append(int(s.stamp_ns))
    if not rows:
        return out
    order = np.argsort(np.asarray(stamps, np.int64), kind="stable")
    st = np.asarray(stamps, np.int64)[order]
    data = np.asarray(rows)[order]
    st, first = np.unique(st, return_index=True)  # duplicate stamps: keep the first
    data = data[first]
    if extrinsic is not None:
        R = np.asarray(extrinsic, np.float64)[:3, :3]
        data = np.concatenate([data[:, :3] @ R.T, data[:, 3:] @ R.T], axis=1)
    period_ns = NS_PER_S / hz
    t_query = t_ns - (window - 1 - np.arange(window)) * period_ns
    rel = (st - t_ns).astype(np.float64)
    q = t_query - t_ns
    for c in range(nio.IMU_CHANNELS):
        out[:, c] = np.interp(q, rel, data[:, c])
    return out
