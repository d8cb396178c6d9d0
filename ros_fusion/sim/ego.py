"""The ego vehicle's trajectory: a lane of the road driven with a speed profile.

Everything a sensor model needs (pose, velocity, yaw rate, acceleration at any
time) comes from one table sampled every `DT` seconds, so the IMU, odometry,
LiDAR motion distortion and radar Doppler all agree with each other exactly.
Sim time t = 0 is `SIM_EPOCH_NS`; the table starts one second earlier so a
LiDAR sweep ending at t ≈ 0 has poses for its first columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.events import SIM_EPOCH_NS
from ..core.transforms import invert_transform
from ..core.types import NS_PER_S
from .road import Road

DT = 0.002  # [s] table step; poses between samples are linearly interpolated
T_PRE = 1.0  # [s] table starts at -T_PRE


@dataclass
class EgoTrajectory:
    t: np.ndarray  # [s] sim time
    s_c: np.ndarray  # centreline arc length
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # unwrapped
    v: np.ndarray  # forward speed over ground [m/s]
    a: np.ndarray  # longitudinal acceleration [m/s^2]
    yaw_rate: np.ndarray  # [rad/s]
    lane_d: float

    def _interp(self, arr: np.ndarray, t) -> np.ndarray:
        return np.interp(np.asarray(t, dtype=np.float64), self.t, arr)

    def pose(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, yaw) of base_link in the world at times `t` [s]."""
        return self._interp(self.x, t), self._interp(self.y, t), self._interp(self.yaw, t)

    def world_from_base(self, t) -> np.ndarray:
        """(N, 4, 4) transforms base_link → world at times `t` (base_link on the ground, z = 0)."""
        x, y, yaw = self.pose(np.atleast_1d(t))
        T = np.zeros((len(x), 4, 4))
        c, s = np.cos(yaw), np.sin(yaw)
        T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = c, -s, s, c
        T[:, 2, 2] = T[:, 3, 3] = 1.0
        T[:, 0, 3], T[:, 1, 3] = x, y
        return T

    def world_from_sensor(self, t, extrinsic: np.ndarray) -> np.ndarray:
        return self.world_from_base(t) @ extrinsic

    def kinematics(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forward speed, longitudinal acceleration, yaw rate) at times `t`."""
        return self._interp(self.v, t), self._interp(self.a, t), self._interp(self.yaw_rate, t)

    def centre_s(self, t) -> np.ndarray:
        return self._interp(self.s_c, t)


def speed_profile(rng: np.random.Generator, n: int, speed_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Cruise / accelerate / brake phases, smoothed to limit jerk.

    Accelerations 0.5–1.5 m/s² and braking 1.5–3.5 m/s² are the comfortable
    range of normal driving (emergency braking reaches 8–10 m/s², not used).
    """
    lo, hi = speed_range
    v0 = rng.uniform(lo + 0.3 * (hi - lo), hi)
    a = np.zeros(n)
    k = 0
    v = v0
    while k < n:
        kind = rng.choice(3, p=[0.4, 0.3, 0.3])
        if kind == 0:
            dur, acc = rng.uniform(1.5, 5.0), 0.0
        else:
            target = rng.uniform(lo, hi)
            acc = rng.uniform(0.5, 1.5) if target > v else -rng.uniform(1.5, 3.5)
            dur = min(abs(target - v) / abs(acc), 8.0)
        m = max(int(dur / DT), 1)
        a[k:k + m] = acc
        v += acc * m * DT
        k += m
    # 0.4 s moving average: jerk stays below ~8 m/s³ while keeping the phases visible.
    w = int(0.4 / DT)
    a = np.convolve(np.pad(a, (w // 2, w - w // 2 - 1), mode="edge"), np.ones(w) / w, mode="valid")
    vel = v0 + np.concatenate([[0.0], np.cumsum(a[:-1]) * DT])
    vel = np.clip(vel, 0.5 * lo, 1.1 * hi)
    a = np.gradient(vel, DT)
    return vel, a


def build_ego(rng: np.random.Generator, road: Road, duration_s: float, s_start: float,
              speed_range: tuple[float, float]) -> EgoTrajectory:
    n = int((duration_s + T_PRE + 1.0) / DT) + 2
    t = -T_PRE + np.arange(n) * DT
    v, a = speed_profile(rng, n, speed_range)
    d = road.layout.lane_centre(0, oncoming=False)
    s_c = np.empty(n)
    s_c[0] = s_start
    # Driving a lane at offset d, centreline advances by v / (1 - kappa d).
    for_k = np.interp(s_start, road.s, road.kappa)
    s_acc = s_start
    for i in range(1, n):  # pure python over ~15k steps: ~10 ms, done once per drive
        s_acc += v[i - 1] * DT / (1.0 - for_k * d)
        for_k = road.kappa[min(int(s_acc / (road.s[1] - road.s[0])), len(road.s) - 1)]
        s_c[i] = s_acc
    x, y, h = road.point(s_c, np.full(n, d))
    yaw = np.unwrap(h)
    yaw_rate = np.gradient(yaw, DT)
    return EgoTrajectory(t, s_c, x, y, yaw, v, a, yaw_rate, d)


class TrueMotion:
    """The simulator's true trajectory behind the query interface of `core.ego_motion.PoseHistory`.

    `core.compensation` needs only ``relative_pose(s)`` and ``velocity`` (and
    ``check``); with this adapter, training data is compensated by the very same
    code the live pipeline uses, fed with ground-truth motion instead of the
    IMU/odometry estimate. Times are int64 ns stamps (sim t = 0 at SIM_EPOCH_NS).
    """

    def __init__(self, ego: EgoTrajectory) -> None:
        self.ego = ego

    @staticmethod
    def _sim_s(times_ns) -> np.ndarray:
        return (np.asarray(times_ns, dtype=np.int64) - SIM_EPOCH_NS) / NS_PER_S

    def relative_poses(self, times_from_ns, t_to_ns: int) -> np.ndarray:
        """(N, 4, 4): base_link at each time in base_link at `t_to_ns` (p_to = M @ p_from)."""
        W = self.ego.world_from_base(self._sim_s(np.atleast_1d(times_from_ns)))
        return invert_transform(self.ego.world_from_base(self._sim_s([t_to_ns]))[0]) @ W

    def relative_pose(self, t_from_ns: int, t_to_ns: int) -> np.ndarray:
        return self.relative_poses([t_from_ns], t_to_ns)[0]

    def velocity(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(velocity over ground, angular velocity) of base_link, base_link axes (planar motion)."""
        v, _, w = self.ego.kinematics(float(self._sim_s(t_ns)))
        return np.array([float(v), 0.0, 0.0]), np.array([0.0, 0.0, float(w)])

    def check(self, t_from_ns: int, t_to_ns: int) -> str | None:
        t0, t1 = float(self.ego.t[0]), float(self.ego.t[-1])
        lo, hi = self._sim_s([min(t_from_ns, t_to_ns), max(t_from_ns, t_to_ns)])
        return "before_history" if lo < t0 else "after_history" if hi > t1 else None
