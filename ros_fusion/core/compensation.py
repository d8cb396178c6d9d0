"""Bring every sensor's data to the trigger time T using the ego pose history (docs/DESIGN.md §6).

Output frame: everything leaves this module in **base_link at T** — LiDAR
points, radar points and camera poses alike — so the BEV rasterisers and the
camera-to-BEV grid all work in the one frame fusion happens in. (Pass
``out_frame="sensor"`` to `deskew_lidar` for the LiDAR's own frame at T.)
The static-world assumption applies: a point keeps its world position between
its capture and T; moving objects are left to the detector's velocity head.

Cost: a sweep has ~100k points, each with its own time. Evaluating a pose
per point (Rodrigues per point) would cost tens of ms, so `deskew_lidar`
samples the exact motion at a handful of knot times, fits each matrix element
of ``M(τ) = T_B(T)⁻¹·T_B(t)·extrinsic`` with a polynomial in τ = t − T (degree
1–4, the lowest whose error, checked against fresh exact poses between the
knots, is below ``max_fit_error_m`` at the cloud's largest range), and
evaluates all points with one small matrix product plus a Horner loop. When no
polynomial is good enough (a jerky or gappy history) it falls back to
piecewise-linear interpolation between knots 2 ms apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .ego_motion import PoseHistory
from .rig import SensorSpec
from .transforms import invert_transform
from .types import NS_PER_S

_KNOTS = 9
_MAX_DEGREE = 4
_FALLBACK_STEP_S = 0.002


@dataclass(frozen=True)
class SweepModel:
    """When each azimuth of a rotating LiDAR fires, for clouds without per-point times.

    The sweep starts at `seam_azimuth_rad` (sensor frame, REP 103: 0 = forward,
    +pi/2 = left) and turns clockwise seen from above (azimuth decreasing, as
    Velodyne/Ouster/Hesai do) or counter-clockwise, taking `period_s`. The
    header stamp is the end of the sweep (`stamp_at_end`, docs/DESIGN.md §4) or its start.
    """

    period_s: float = 0.1
    clockwise: bool = True
    seam_azimuth_rad: float = math.pi
    stamp_at_end: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"period_s must be > 0, got {self.period_s!r}")
        if not math.isfinite(self.seam_azimuth_rad):
            raise ValueError("seam_azimuth_rad must be finite")

    @staticmethod
    def from_spec(spec: SensorSpec) -> SweepModel:
        """Period from the rig rate, direction from its model block (``clockwise``, default true)."""
        return SweepModel(period_s=spec.period_s, clockwise=bool(spec.model.get("clockwise", True)),
                          seam_azimuth_rad=float(spec.model.get("seam_azimuth_rad", math.pi)))

    def offsets_s(self, xyz: np.ndarray) -> np.ndarray:
        """Capture time of each point relative to the header stamp [s] (≤ 0 when stamped at the end)."""
        az = np.arctan2(xyz[:, 1], xyz[:, 0])
        d = (self.seam_azimuth_rad - az) if self.clockwise else (az - self.seam_azimuth_rad)
        frac = np.mod(d, 2 * np.pi) / (2 * np.pi)
        return (frac - 1.0) * self.period_s if self.stamp_at_end else frac * self.period_s


def _check_points(xyz, name: str) -> np.ndarray:
    a = np.asarray(xyz)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3), got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a


def _check_transform(T, name: str) -> np.ndarray:
    a = np.asarray(T, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite 4x4 transform, got shape {a.shape}")
    return a


def _motion_matrices(history: PoseHistory, tau_s: np.ndarray, T_ns: int, left: np.ndarray,
                     right: np.ndarray) -> np.ndarray:
    """(K, 3, 4): left · relative_pose(T + τ, T) · right at each τ [s]."""
    times = np.int64(T_ns) + np.rint(tau_s * NS_PER_S).astype(np.int64)
    rel = history.relative_poses(times, T_ns)
    return (left @ rel @ right)[:, :3, :]


def _fit_polynomial(history: PoseHistory, T_ns: int, lo: float, hi: float, left: np.ndarray,
                    right: np.ndarray, r_max: float, tol: float) -> np.ndarray | None:
    """Coefficients (d+1, 3, 4) of M(τ) ≈ Σ C_j τ^j on [lo, hi], or None if degree 4 is not enough."""
    if hi - lo < 1e-9:
        return _motion_matrices(history, np.array([lo]), T_ns, left, right)
    k = np.arange(_KNOTS)
    knots = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * (2 * k + 1) / (2 * _KNOTS))[::-1]
    knots = np.concatenate([[lo], knots, [hi]])
    checks = 0.5 * (knots[1:] + knots[:-1])
    M = _motion_matrices(history, np.concatenate([knots, checks]), T_ns, left, right)
    Mk, Mc = M[: len(knots)].reshape(len(knots), 12), M[len(knots):]
    for deg in range(1, _MAX_DEGREE + 1):
        coef = np.polynomial.polynomial.polyfit(knots, Mk, deg)  # (deg+1, 12)
        C = coef.reshape(deg + 1, 3, 4)
        V = np.vander(checks, deg + 1, increasing=True)  # (C, deg+1)
        E = np.einsum("cj,jab->cab", V, C) - Mc
        err = np.linalg.norm(E[:, :, :3], axis=(1, 2)) * r_max + np.linalg.norm(E[:, :, 3], axis=1)
        if float(err.max()) <= tol:
            return C
    return None


def _apply_polynomial(xyz: np.ndarray, tau: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Σ_j τ^j (A_j p + b_j) for all points, Horner in τ, one output row at a time.

    Plain elementwise passes over contiguous (N,) rows with preallocated
    buffers: no BLAS call, because a multithreaded BLAS product this thin
    slows down ~10x when another process holds a core (measured on the
    2-core CI box), and a fusion node never has the machine to itself.
    """
    d = len(C) - 1
    dt = xyz.dtype.type
    n = len(xyz)
    X, Y, Z = np.ascontiguousarray(xyz.T)
    out = np.empty((3, n), xyz.dtype)
    tmp = np.empty(n, xyz.dtype)
    for k in range(3):
        o = out[k]
        for j in range(d, -1, -1):
            a0, a1, a2, b = (dt(v) for v in C[j, k])
            if j == d:
                np.multiply(X, a0, out=o)
            else:
                o *= tau
                np.multiply(X, a0, out=tmp)
                o += tmp
            np.multiply(Y, a1, out=tmp)
            o += tmp
            np.multiply(Z, a2, out=tmp)
            o += tmp
            o += b
    return out.T

def _apply_piecewise(history: PoseHistory, xyz: np.ndarray, tau: np.ndarray, T_ns: int, lo: float, hi: float,
                     left: np.ndarray, right: np.ndarray) -> np.ndarray:
    n = max(int(math.ceil((hi - lo) / _FALLBACK_STEP_S)), 1)
    knots = np.linspace(lo, hi, n + 1)
    M = _motion_matrices(history, knots, T_ns, left, right).reshape(n + 1, 12).astype(xyz.dtype)
    u = (tau - lo) / ((hi - lo) / n) if hi > lo else np.zeros_like(tau)
    i = np.clip(np.floor(u).astype(np.int64), 0, n - 1)
    a = (u - i).astype(xyz.dtype)[:, None]
    G = M[i] + a * (M[np.minimum(i + 1, n)] - M[i])
    return (np.einsum("nij,nj->ni", G.reshape(-1, 3, 4)[:, :, :3], xyz) + G.reshape(-1, 3, 4)[:, :, 3])


def deskew_lidar(cloud_xyz, point_times_ns, T_ns: int, history: PoseHistory, extrinsic, *,
                 stamp_ns: int | None = None, sweep: SweepModel | None = None, out_frame: str = "base_link",
                 max_fit_error_m: float = 0.01, fit_range_m: float = 100.0) -> np.ndarray:
    """Move LiDAR points captured at their own firing times to time `T_ns`.

    cloud_xyz: (N, 3) points in the sensor frame, each at its firing time.
    point_times_ns: (N,) absolute int64 capture times, or None: then each
    point's time comes from its azimuth with `sweep` (default `SweepModel()`)
    relative to `stamp_ns` (required then).
    extrinsic: sensor → base_link (4×4).
    The motion polynomial is accepted when its error is below `max_fit_error_m`
    for a point at `fit_range_m` (or the farthest point seen in a sample).
    Returns (N, 3) (not necessarily C-contiguous) in base_link at T (or the sensor frame at T with
    ``out_frame="sensor"``), float32 for float32 input, else float64.
    Raises OutOfHistory if the history does not cover the points' times and T
    (check ``history.check(t_min, T_ns)`` first), ValueError on misuse.
    """
    xyz = _check_points(cloud_xyz, "cloud_xyz")
    E = _check_transform(extrinsic, "extrinsic")
    if out_frame not in ("base_link", "sensor"):
        raise ValueError(f"out_frame must be 'base_link' or 'sensor', got {out_frame!r}")
    left = invert_transform(E) if out_frame == "sensor" else np.eye(4)
    n = len(xyz)
    if n == 0:
        return np.zeros((0, 3), xyz.dtype)
    if point_times_ns is None:
        if stamp_ns is None:
            raise ValueError("deskew_lidar: without point_times_ns, stamp_ns is required")
        base = (int(stamp_ns) - int(T_ns)) / NS_PER_S
        tau = ((sweep or SweepModel()).offsets_s(xyz) + base).astype(xyz.dtype)
    else:
        times = np.asarray(point_times_ns)
        if times.shape != (n,) or times.dtype.kind not in "iu":
            raise ValueError(f"point_times_ns must be ({n},) integers, got {times.shape} {times.dtype}")
        tau = (times - np.int64(T_ns)).astype(xyz.dtype)
        tau *= xyz.dtype.type(1.0 / NS_PER_S)
    lo, hi = float(tau.min()), float(tau.max())
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # T itself must be covered too
    # Range the fit tolerance refers to: the sensor's reach, or farther points seen in a sample.
    sub = xyz[:: max(n // 1024, 1)].astype(np.float64)
    r_max = max(fit_range_m, 1.1 * math.sqrt(float(np.max(np.einsum("ij,ij->i", sub, sub)))))
    C = _fit_polynomial(history, int(T_ns), lo, hi, left, E, r_max, max_fit_error_m)
    if C is None:
        return _apply_piecewise(history, xyz, tau, int(T_ns), lo, hi, left, E)
    return _apply_polynomial(xyz, tau, C)


def compensate_radar(points, v_r, stamp_ns: int, T_ns: int, history: PoseHistory,
                     extrinsic) -> tuple[np.ndarray, np.ndarray]:
    """Radar detections of a scan at `stamp_ns` → (xyz in base_link at T, v_r over ground).

    points: (N, 3) in the radar frame; v_r: (N,) raw range rate relative to the
    moving sensor (negative = approaching). The radar mount's own velocity at
    `stamp_ns` (base_link velocity + ω × lever arm, in radar axes) is removed
    along each line of sight: ``v_r_comp = v_r + û·v_sensor``, so a static
    object reads ≈ 0 and v_r_comp is the target's radial velocity over ground
    (along the line of sight of the radar at capture). A point at the radar's
    origin has no line of sight and keeps its raw v_r.
    """
    P = _check_points(points, "points").astype(np.float64, copy=False)
    vr = np.asarray(v_r, dtype=np.float64).reshape(-1)
    if len(vr) != len(P):
        raise ValueError(f"v_r has {len(vr)} values for {len(P)} points")
    E = _check_transform(extrinsic, "extrinsic")
    M = history.relative_pose(int(stamp_ns), int(T_ns)) @ E
    xyz = P @ M[:3, :3].T + M[:3, 3]
    v_b, w_b = history.velocity(int(stamp_ns))
    v_sensor = E[:3, :3].T @ (v_b + np.cross(w_b, E[:3, 3]))
    rng = np.linalg.norm(P, axis=1)
    u = P / np.where(rng > 1e-6, rng, np.inf)[:, None]
    return xyz, vr + u @ v_sensor


def camera_pose_at(stamp_ns: int, T_ns: int, history: PoseHistory, extrinsic) -> np.ndarray:
    """4×4 camera frame at its capture time `stamp_ns` → base_link at `T_ns`.

    `extrinsic` is camera → base_link (the optical frame's, for projecting
    with the intrinsics). The camera-to-BEV grid projects a BEV point q (base_link at T)
    with ``inv(camera_pose_at(...)) @ q``.
    """
    return history.relative_pose(int(stamp_ns), int(T_ns)) @ _check_transform(extrinsic, "extrinsic")


def camera_poses_at(stamps_ns: Sequence[int], T_ns: int, history: PoseHistory,
                    extrinsics: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 4, 4) `camera_pose_at` for N cameras (N may be 0) in one history query."""
    if len(stamps_ns) != len(extrinsics):
        raise ValueError(f"{len(stamps_ns)} stamps for {len(extrinsics)} extrinsics")
    if len(stamps_ns) == 0:
        return np.zeros((0, 4, 4))
    E = np.stack([_check_transform(e, "extrinsic") for e in extrinsics])
    return history.relative_poses(np.asarray(stamps_ns, dtype=np.int64), int(T_ns)) @ E


class StaticMotion:
    """A vehicle standing still, behind the query interface of `PoseHistory` (identity poses, zero velocity).

    Why: when no ego-motion is available (no IMU/odometry yet, or the history
    does not cover a bundle) fusion still has to run; the honest fallback is
    "no compensation", which is exactly what a standing vehicle needs. The
    caller counts each use so the missing compensation is never silent.
    """

    def relative_poses(self, times_from_ns, t_to_ns: int) -> np.ndarray:
        n = len(np.atleast_1d(np.asarray(times_from_ns)))
        return np.repeat(np.eye(4)[None], n, axis=0)

    def relative_pose(self, t_from_ns: int, t_to_ns: int) -> np.ndarray:
        return np.eye(4)

    def velocity(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(3), np.zeros(3)

    def check(self, t_from_ns: int, t_to_ns: int) -> str | None:
        return None
