"""A radar's own velocity from one scan's Doppler, for rigs that have no odometry.

Why: radar Doppler is only useful for telling moving objects from the world once the sensor's own motion
is taken out (`core.compensation.compensate_radar`, which needs an ego-motion source). Recordings without
IMU or odometry — the Astyx HiRes2019 set, a radar bag replayed on its own — still hold the answer in the
scan itself: every stationary target satisfies v_r = −û·v_s (û its line of sight, v_s the sensor's
velocity), and stationary targets are most of a street scene's detections, so v_s is the robust fit over
the scan and the moving objects are its outliers (Kellner et al., "Instantaneous ego-motion estimation
using Doppler radar", IEEE ITSC 2013).

Aliasing: a radar whose unambiguous velocity interval is W reports v_r folded into [−W/2, W/2) (Astyx 6455:
W = 10.39 m/s, 128 steps of 0.081 m/s). Residuals are compared folded, so the fit holds at any ego speed,
and the compensated velocity is folded likewise: "moving or not" is exact, a fast target's speed is known
modulo W.

Method: a coarse search over forward speed (lateral speed 0: the sensor rides a ground vehicle) counts the
detections each hypothesis explains; scipy's robust least squares (soft-L1 loss) refines forward and
lateral speed from there. A scan whose best hypothesis explains too few detections gives no estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DopplerEgoConfig:
    """Search range and acceptance of the fit (base_link axes: x forward, y left)."""

    max_speed_mps: float = 45.0       # |forward speed| searched (both signs: drivers disagree on v_r's sign)
    max_lateral_mps: float = 2.0      # |lateral speed| allowed: yaw rate × the radar's lever arm, plus slip
    step_mps: float = 0.1             # coarse search step (below the inlier band, so no peak falls between)
    inlier_mps: float = 0.25          # |folded residual| of a stationary target (Doppler resolution + noise)
    min_inliers: int = 8              # fewer stationary detections than this: no estimate
    min_inlier_fraction: float = 0.15  # ... or fewer than this share of the scan
    max_search_points: int = 400      # the coarse search and the refinement use at most this many detections


@dataclass(frozen=True)
class DopplerEgo:
    """The fitted sensor velocity (base_link axes, m/s) and how many detections it explains."""

    velocity: np.ndarray  # (3,), z = 0
    inliers: int
    detections: int


def fold(v: np.ndarray, interval: float | None) -> np.ndarray:
    """Velocities folded into [−interval/2, interval/2); unchanged without an interval."""
    if not interval:
        return v
    half = 0.5 * interval
    return np.mod(v + half, interval) - half


def estimate_sensor_velocity(directions: np.ndarray, v_r: np.ndarray, *, interval: float | None = None,
                             config: DopplerEgoConfig = DopplerEgoConfig()) -> DopplerEgo | None:
    """The sensor velocity that makes most detections stationary; None when no hypothesis explains enough.

    directions: (N, 3) unit lines of sight in base_link axes (the radar's rotation applied); v_r: (N,) raw
    radial velocity (negative = approaching); interval: the radar's unambiguous velocity interval, or None.
    Non-finite rows are ignored.
    """
    u = np.asarray(directions, np.float64).reshape(-1, 3)
    v = np.asarray(v_r, np.float64).reshape(-1)
    if len(u) != len(v):
        raise ValueError(f"{len(v)} radial velocities for {len(u)} directions")
    good = np.isfinite(u).all(axis=1) & np.isfinite(v) & (np.linalg.norm(u, axis=1) > 0.5)
    u, v = u[good], v[good]
    n = len(v)
    cfg = config
    if n < cfg.min_inliers:
        return None
    pick = np.linspace(0, n - 1, min(n, cfg.max_search_points)).astype(int)
    ux, vs = u[pick, 0], v[pick]
    speeds = np.arange(-cfg.max_speed_mps, cfg.max_speed_mps + 0.5 * cfg.step_mps, cfg.step_mps)
    counts = np.empty(len(speeds), np.int64)
    for lo in range(0, len(speeds), 128):  # (speeds × points) in blocks: bounded memory
        res = fold(vs[None, :] + speeds[lo:lo + 128, None] * ux[None, :], interval)
        counts[lo:lo + 128] = np.count_nonzero(np.abs(res) <= cfg.inlier_mps, axis=1)
    best = int(np.argmax(counts))
    start = np.array([speeds[best], 0.0])

    def residual(p: np.ndarray) -> np.ndarray:
        return fold(v + u[:, 0] * p[0] + u[:, 1] * p[1], interval)

    from scipy.optimize import least_squares  # 0.4 s to import: paid by rigs without odometry only

    near = np.abs(residual(start)) <= 2.0 * cfg.inlier_mps
    if np.count_nonzero(near) >= 2:
        idx = np.flatnonzero(near)
        idx = idx[np.linspace(0, len(idx) - 1, min(len(idx), cfg.max_search_points)).astype(int)]
        u_in, v_in = u[idx], v[idx]
        fit = least_squares(lambda p: fold(v_in + u_in[:, 0] * p[0] + u_in[:, 1] * p[1], interval), start,
                            loss="soft_l1", f_scale=cfg.inlier_mps,
                            bounds=([-cfg.max_speed_mps - 1.0, -cfg.max_lateral_mps],
                                    [cfg.max_speed_mps + 1.0, cfg.max_lateral_mps]))
        p = fit.x
    else:
        p = start
    inliers = int(np.count_nonzero(np.abs(residual(p)) <= cfg.inlier_mps))
    if inliers < max(cfg.min_inliers, cfg.min_inlier_fraction * n):
        return None
    return DopplerEgo(np.array([p[0], p[1], 0.0]), inliers, n)


def compensate_with_doppler(points: np.ndarray, v_r: np.ndarray, extrinsic: np.ndarray, *,
                            interval: float | None = None, config: DopplerEgoConfig = DopplerEgoConfig()
                            ) -> tuple[np.ndarray, DopplerEgo | None]:
    """v_r over ground (folded) for a scan in the radar frame, from the scan's own Doppler.

    The same convention as `compensate_radar`: v_r_comp = v_r + û·v_sensor, so stationary targets read ≈ 0.
    Without an estimate the raw v_r comes back (and None), as with no ego-motion source at all.
    """
    P = np.asarray(points, np.float64).reshape(-1, 3)
    v = np.asarray(v_r, np.float64).reshape(-1)
    rng = np.linalg.norm(P, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (P / np.where(rng > 1e-6, rng, np.nan)[:, None]) @ np.asarray(extrinsic, np.float64)[:3, :3].T
    est = estimate_sensor_velocity(u, v, interval=interval, config=config)
    if est is None:
        return v, None
    with np.errstate(invalid="ignore"):  # non-finite v_r stay non-finite (the detector drops them)
        comp = fold(v + np.nan_to_num(u) @ est.velocity, interval)
    return comp, est


__all__ = ["DopplerEgo", "DopplerEgoConfig", "compensate_with_doppler", "estimate_sensor_velocity", "fold"]
