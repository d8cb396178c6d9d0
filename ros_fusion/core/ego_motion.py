"""Ego-motion: a bounded pose history of base_link integrated from IMU (+ wheel odometry).

Why: every sensor captures at its own time, but fusion happens at one trigger
time T (docs/DESIGN.md §6). To bring a LiDAR point, a radar detection or a camera ray
to T we need the vehicle's motion between any two recent instants, at a few
millimetres over a sweep. Gyros give rotation very well over such spans; speed
is what an IMU alone gets wrong (it integrates accelerometer bias and tilt
errors), so wheel odometry, when present, fixes the translation.

Frames and conventions (REP 103, int64 ns):

* The history lives in a local gravity-aligned frame ``W`` (z up) whose origin
  is where integration started; it is *not* the odometry's ``odom`` frame
  (odometry's pose is ignored, only its twist is used). Only relative poses
  leave this module, so the arbitrary origin never matters.
* ``pose(t)`` is T_W_B(t): base_link at t → W.
* ``relative_pose(t_from, t_to)`` = T_W_B(t_to)⁻¹ · T_W_B(t_from): the pose of
  base_link at ``t_from`` expressed in base_link at ``t_to``. Multiply a point
  given in base_link *at t_from* by it to get the same world point in
  base_link *at t_to*: ``p_to = relative_pose(t_from, t_to) @ p_from``.
* ``velocity(t)`` = (linear velocity of base_link over ground, angular
  velocity), both in base_link axes at t.

Integration model. Every accepted IMU sample is a knot (t, R, p, v). Between
two knots the angular rate and the world acceleration are the averages of the
two end samples (trapezoid) and held constant, so ``R(t) = R_i·Exp(ω_i τ)`` and
``p(t) = p_i + v_i τ + ½ a_i τ²`` reproduce the integration exactly at any
query time. After the newest sample the last rates are held (extrapolation,
at most ``max_extrapolation_s``). The specific force is moved from the IMU to
the base_link origin (lever arm: centripetal and tangential terms).

Translation: with fresh odometry (its last message younger than
``odometry_timeout_s``) the base_link velocity is the odometry twist
(extrapolated by its own acceleration), rotated into W by the IMU attitude:
no gravity subtraction, so attitude errors barely matter. Without it, the
specific force minus gravity is integrated (IMU-only; the drift this implies
is measured in docs/ego_motion.md). With odometry but no IMU, the odometry
twist alone is integrated.

Bias. While the vehicle is stationary (quiet gyro and accelerometer over
``still_window_s``, and odometry speed ≈ 0 when odometry is present, else the
integrated speed ≈ 0) the gyro bias is the mean rate, velocity is zeroed,
roll/pitch are re-levelled to the measured gravity and the accelerometer bias
*along gravity* is estimated. Horizontal accelerometer bias is not observable
from a stationary IMU (it is indistinguishable from tilt) and is absorbed into
roll/pitch. Before the first stationary period the attitude starts level
(base_link on the ground, REP 103) with zero biases.

Robustness: a sample is rejected and counted (never raised) when its stamp is
invalid, its values non-finite or beyond the sensor's physical range, it
jumps grossly from its neighbour (a spike), it duplicates or predates the
newest sample (out of order), or its frame is wrong. A stamp far in the past
(bag loop) or a gap longer than ``reset_gap_s`` restarts the history (counted).
Gaps up to ``reset_gap_s`` are bridged; those longer than ``max_bridge_s`` are
flagged and ``check()`` reports queries across them. Memory is bounded by
``max_age_s`` and ``max_knots``, dropping the oldest (counted).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .transforms import make_transform, matrix_to_rpy, rpy_to_matrix, so3_exp
from .types import NS_PER_S, ImuSample, Odometry

GRAVITY = 9.80665
_G_W = np.array([0.0, 0.0, GRAVITY])
_FLAG_LONG_GAP = 1


class OutOfHistory(ValueError):
    """A query time outside what the history covers (misuse: check `covers` first)."""


@dataclass
class EgoMotionConfig:
    """Tuning of `PoseHistory`. Defaults suit a car with a MEMS IMU at 100–400 Hz."""

    imu_extrinsic: np.ndarray = field(default_factory=lambda: np.eye(4))  # imu_link → base_link
    imu_frame: str = ""  # expected ImuSample.frame_id ("" accepts any)
    base_frame: str = "base_link"  # expected Odometry.child_frame_id ("" accepts any)
    max_age_s: float = 10.0  # history kept behind the newest sample
    max_knots: int = 10_000  # hard bound on stored samples (drop-oldest)
    nominal_rate_hz: float = 100.0  # IMU rate, for gap accounting
    max_bridge_s: float = 0.1  # gaps up to this are routine; longer ones are flagged
    reset_gap_s: float = 1.0  # gaps (or stamps going back) longer than this restart the history
    max_extrapolation_s: float = 0.1  # queries this far past the newest sample hold its rates
    # Physical limits (BMI088: ±2000 °/s, ±24 g) and neighbour consistency.
    gyro_limit_rad_s: float = 35.0
    accel_limit_m_s2: float = 24.0 * GRAVITY
    gyro_jump_rad_s: float = 1.0  # allowed |Δω| between samples + max_angular_accel·dt
    max_angular_accel: float = 30.0  # rad/s²
    accel_jump_m_s2: float = 30.0  # allowed |Δf| between samples + max_jerk·dt
    max_jerk: float = 500.0  # m/s³
    spike_reseed: int = 3  # after this many consecutive "spikes" the signal really changed: accept
    speed_limit_m_s: float = 100.0  # odometry speeds beyond this are rejected
    # Stationarity.
    still_window_s: float = 0.25
    still_gyro_std: float = 0.01  # rad/s, per axis
    still_gyro_mean: float = 0.03  # rad/s, |mean − bias|
    still_accel_std: float = 0.1  # m/s², per axis
    still_accel_norm: float = 0.3  # m/s², ||f| − g|
    still_speed_m_s: float = 0.05  # odometry speed (when present)
    still_est_speed_m_s: float = 0.3  # integrated speed (IMU-only)
    odometry_timeout_s: float = 0.2  # odometry older than this no longer drives translation
    imu_timeout_s: float = 0.5  # without IMU for this long, odometry alone drives the history
    lever_filter_s: float = 0.02  # time constant of the angular-acceleration estimate

    def __post_init__(self) -> None:
        E = np.asarray(self.imu_extrinsic, dtype=np.float64)
        if E.shape != (4, 4) or not np.all(np.isfinite(E)):
            raise ValueError("imu_extrinsic must be a finite 4x4 transform")
        R = E[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-5):
            raise ValueError("imu_extrinsic rotation is not orthonormal")
        self.imu_extrinsic = E
        for name in ("max_age_s", "nominal_rate_hz", "max_bridge_s", "reset_gap_s", "still_window_s",
                     "odometry_timeout_s", "imu_timeout_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.max_knots < 4:
            raise ValueError(f"max_knots must be >= 4, got {self.max_knots}")


@dataclass
class EgoMotionStats:
    """Every sample in is accounted for: accepted, or rejected under a reason."""

    imu_received: int = 0
    imu_accepted: int = 0
    imu_rejected: dict[str, int] = field(default_factory=dict)  # nonfinite, bad_stamp, duplicate, ...
    odometry_received: int = 0
    odometry_accepted: int = 0
    odometry_rejected: dict[str, int] = field(default_factory=dict)
    short_gaps: int = 0  # IMU gaps > 1.5 nominal periods, ≤ max_bridge_s: bridged
    long_gaps: int = 0  # gaps > max_bridge_s, ≤ reset_gap_s: bridged and flagged
    resets: int = 0  # history restarted (bag loop, clock jump, gap > reset_gap_s)
    evicted: int = 0  # knots dropped for age or capacity
    spikes_reseeded: int = 0  # runs of "spikes" finally accepted as a real change
    stationary_samples: int = 0
    bias_updates: int = 0

    def reject(self, kind: str, reason: str) -> None:
        d = self.imu_rejected if kind == "imu" else self.odometry_rejected
        d[reason] = d.get(reason, 0) + 1


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3-vector cross product (np.cross costs ~15 µs of axis bookkeeping per call)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _exp(w: np.ndarray) -> np.ndarray:
    """Rodrigues for one rotation vector, scalar maths (the per-sample hot path)."""
    x, y, z = float(w[0]), float(w[1]), float(w[2])
    th2 = x * x + y * y + z * z
    if th2 < 1e-8:
        a, b = 1.0 - th2 / 6.0, 0.5 - th2 / 24.0
    else:
        th = math.sqrt(th2)
        a, b = math.sin(th) / th, (1.0 - math.cos(th)) / th2
    return np.array([
        [1.0 - b * (y * y + z * z), b * x * y - a * z, b * x * z + a * y],
        [b * x * y + a * z, 1.0 - b * (x * x + z * z), b * y * z - a * x],
        [b * x * z - a * y, b * y * z + a * x, 1.0 - b * (x * x + y * y)],
    ])


def _vec3(v) -> np.ndarray | None:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        return None
    return a


def _valid_stamp(t) -> bool:
    return isinstance(t, (int, np.integer)) and not isinstance(t, bool) and 0 < int(t) < 2**62


class PoseHistory:
    """Pose history of base_link from IMU (+ odometry); see the module docstring."""

    def __init__(self, config: EgoMotionConfig | None = None) -> None:
        self.config = config or EgoMotionConfig()
        c = self.config
        self._R_bi = c.imu_extrinsic[:3, :3].copy()
        self._r_bi = c.imu_extrinsic[:3, 3].copy()
        self.stats = EgoMotionStats()
        cap = int(c.max_knots)
        self._cap = cap
        self._t = np.zeros(cap, np.int64)
        self._R = np.zeros((cap, 3, 3))
        self._p = np.zeros((cap, 3))
        self._v = np.zeros((cap, 3))
        self._w = np.zeros((cap, 3))  # body rate over the interval after the knot
        self._a = np.zeros((cap, 3))  # world acceleration over the interval after the knot
        self._flag = np.zeros(cap, np.uint8)
        self.gyro_bias = np.zeros(3)  # imu_link
        self.accel_bias = np.zeros(3)  # imu_link
        self._reset_state()

    @staticmethod
    def from_rig(rig, **overrides) -> PoseHistory:
        """History for the rig's first IMU (extrinsic, frame and rate from the rig file)."""
        imus = rig.of("imu")
        kw: dict = {"base_frame": rig.base_frame}
        if imus:
            s = imus[0]
            kw.update(imu_extrinsic=s.extrinsic, imu_frame=s.frame_id, nominal_rate_hz=s.rate_hz)
        kw.update(overrides)
        return PoseHistory(EgoMotionConfig(**kw))

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self._s = 0  # first live knot
        self._n = 0  # live knots
        self._last_raw: tuple[np.ndarray, np.ndarray] | None = None  # imu-frame ω, f (uncorrected)
        self._last_wb = np.zeros(3)
        self._last_fb = np.zeros(3)
        self._wdot = np.zeros(3)
        self._last_imu_t: int | None = None
        self._spike_run = 0
        self._win: deque[tuple[int, np.ndarray]] = deque()
        self._win_sum = np.zeros(6)
        self._win_sq = np.zeros(6)
        self._still = False
        self._still_sum = np.zeros(6)
        self._still_cnt = 0
        self._odo: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None  # t, v_b, ω_b, a_b
        self._last_odo_t: int | None = None

    def reset(self) -> None:
        """Forget the history (biases are kept: they belong to the sensor, not the drive)."""
        self._reset_state()

    @property
    def empty(self) -> bool:
        return self._n == 0

    def span(self) -> tuple[int, int]:
        """(oldest, newest) knot time; raises OutOfHistory when empty."""
        if self._n == 0:
            raise OutOfHistory("pose history is empty")
        return int(self._t[self._s]), int(self._t[self._s + self._n - 1])

    @property
    def stationary(self) -> bool:
        return self._still

    @property
    def mode(self) -> str:
        """What drives the translation now: 'imu+odometry', 'imu', 'odometry' or 'empty'."""
        if self._n == 0:
            return "empty"
        t = self.span()[1]
        has_imu = self._last_imu_t is not None and t - self._last_imu_t <= self._ns(self.config.imu_timeout_s)
        if has_imu:
            return "imu+odometry" if self._odometry_fresh(t) else "imu"
        return "odometry"

    @staticmethod
    def _ns(s: float) -> int:
        return int(round(s * NS_PER_S))

    def _odometry_fresh(self, t: int) -> bool:
        return self._odo is not None and abs(t - self._odo[0]) <= self._ns(self.config.odometry_timeout_s)

    # ---------------------------------------------------------------- storage
    def _append(self, t: int, R: np.ndarray, p: np.ndarray, v: np.ndarray, w: np.ndarray, a: np.ndarray) -> None:
        if self._n == self._cap:  # full: drop oldest
            self._s += 1
            self._n -= 1
            self.stats.evicted += 1
        if self._s + self._n == self._cap:  # compact to the front
            sl = slice(self._s, self._s + self._n)
            for arr in (self._t, self._R, self._p, self._v, self._w, self._a, self._flag):
                arr[: self._n] = arr[sl]
            self._s = 0
        i = self._s + self._n
        self._t[i], self._R[i], self._p[i], self._v[i], self._w[i], self._a[i] = t, R, p, v, w, a
        self._flag[i] = 0
        self._n += 1
        # Age eviction: keep the newest knot at or before (newest − max_age) so that time stays answerable.
        horizon = t - self._ns(self.config.max_age_s)
        k = int(np.searchsorted(self._t[self._s: self._s + self._n], horizon, side="right")) - 1
        if k > 0:
            self._s += k
            self._n -= k
            self.stats.evicted += k

    def _newest(self) -> int:
        return self._s + self._n - 1

    # ------------------------------------------------------------------ input
    def _screen(self, kind: str, msg: object, frame: str, expected_frame: str, a: object, b: object,
                limit_a: float, limit_b: float) -> tuple[int, np.ndarray, np.ndarray] | None:
        """Checks IMU and odometry samples share: stamp, frame, two finite 3-vectors within limits.

        Returns (stamp_ns, a, b), or None after counting the reason under `kind`.
        """
        st = self.stats
        t = getattr(msg, "stamp_ns", None)
        if not _valid_stamp(t):
            st.reject(kind, "bad_stamp")
            return None
        if expected_frame and frame and frame != expected_frame:
            st.reject(kind, "frame")
            return None
        va, vb = _vec3(a), _vec3(b)
        if va is None or vb is None:
            st.reject(kind, "shape")
            return None
        if not (np.all(np.isfinite(va)) and np.all(np.isfinite(vb))):
            st.reject(kind, "nonfinite")
            return None
        if np.linalg.norm(va) > limit_a or np.linalg.norm(vb) > limit_b:
            st.reject(kind, "out_of_range")
            return None
        return int(t), va, vb

    def add_imu(self, sample: ImuSample) -> bool:
        """Integrate one IMU sample; returns False (and counts why) when it is rejected."""
        st = self.stats
        st.imu_received += 1
        c = self.config
        screened = self._screen("imu", sample, sample.frame_id, c.imu_frame, sample.angular_velocity,
                                sample.linear_acceleration, c.gyro_limit_rad_s, c.accel_limit_m_s2)
        if screened is None:
            return False
        t, w_raw, f_raw = screened
        if self._last_imu_t is not None and t == self._last_imu_t:
            st.reject("imu", "duplicate")
            return False
        dt_ns = 0
        if self._n:
            dt_ns = t - self.span()[1]
            if dt_ns < 0:
                if -dt_ns <= self._ns(c.reset_gap_s):
                    st.reject("imu", "out_of_order")
                    return False
                self._restart()  # stamps jumped back (bag loop, clock reset)
                dt_ns = 0
            elif dt_ns > self._ns(c.reset_gap_s):
                self._restart()  # too long to bridge
                dt_ns = 0
        imu_recent = (self._last_imu_t is not None and self._last_raw is not None
                      and 0 < t - self._last_imu_t <= self._ns(c.reset_gap_s))
        if dt_ns > 0 and imu_recent:
            dt = (t - self._last_imu_t) / NS_PER_S
            w0, f0 = self._last_raw
            spike = (np.linalg.norm(w_raw - w0) > c.gyro_jump_rad_s + c.max_angular_accel * dt
                     or np.linalg.norm(f_raw - f0) > c.accel_jump_m_s2 + c.max_jerk * dt)
            if spike:
                self._spike_run += 1
                if self._spike_run < c.spike_reseed:
                    st.reject("imu", "spike")
                    return False
                st.spikes_reseeded += 1
            self._spike_run = 0
        st.imu_accepted += 1
        self._last_raw = (w_raw, f_raw)
        self._update_stationarity(t, w_raw, f_raw)
        w_b = self._R_bi @ (w_raw - self.gyro_bias)
        f_imu_b = self._R_bi @ (f_raw - self.accel_bias)
        if not imu_recent:
            self._last_wb, self._last_fb, self._wdot = w_b, f_imu_b, np.zeros(3)
        elif dt_ns > 0:
            dt = dt_ns / NS_PER_S
            k = dt / (dt + c.lever_filter_s)
            self._wdot = (1 - k) * self._wdot + k * (w_b - self._last_wb) / dt
        r = self._r_bi
        f_b = f_imu_b - _cross(self._wdot, r) - _cross(w_b, _cross(w_b, r))
        self._last_imu_t = t
        if self._n == 0:
            self._start(t, w_b, f_b)
        elif dt_ns == 0:  # same stamp as an odometry-made knot: the IMU takes over from here
            self._w[self._newest()] = w_b
        else:
            if dt_ns > self._ns(c.max_bridge_s):
                st.long_gaps += 1
                self._flag[self._newest()] |= _FLAG_LONG_GAP
            elif dt_ns > 1.5 * NS_PER_S / c.nominal_rate_hz:
                st.short_gaps += 1
            self._step(t, 0.5 * (self._last_wb + w_b), 0.5 * (self._last_fb + f_b), w_b, f_b)
        self._last_wb, self._last_fb = w_b, f_b
        if self._still:
            self._apply_stationary()
        return True

    def add_odometry(self, odo: Odometry) -> bool:
        """Use one odometry message (its twist); returns False (and counts why) when rejected."""
        st = self.stats
        st.odometry_received += 1
        c = self.config
        screened = self._screen("odometry", odo, odo.child_frame_id, c.base_frame, odo.linear_velocity,
                                odo.angular_velocity, c.speed_limit_m_s, c.gyro_limit_rad_s)
        if screened is None:
            return False
        t, v, w = screened
        if self._last_odo_t is not None:
            d = t - self._last_odo_t
            if d == 0:
                st.reject("odometry", "duplicate")
                return False
            if d < 0 and -d <= self._ns(c.reset_gap_s):
                st.reject("odometry", "out_of_order")
                return False
            if abs(d) > self._ns(c.reset_gap_s):
                self._odo = None  # bag loop / long silence: no acceleration across it
        a_b = np.zeros(3)
        if self._odo is not None and t > self._odo[0]:  # a reset can forget _last_odo_t but keep _odo
            t0, v0, _, a0 = self._odo
            dt = (t - t0) / NS_PER_S
            k = min(dt / (dt + 0.05), 1.0)  # smoothed: wheel speed ticks are coarse
            a_b = (1 - k) * a0 + k * (v - v0) / dt
        self._odo = (t, v, w, a_b)
        self._last_odo_t = t
        st.odometry_accepted += 1
        imu_alive = self._last_imu_t is not None and (
            self._n > 0 and t - self._last_imu_t <= self._ns(c.imu_timeout_s))
        if not imu_alive:  # odometry alone drives the history
            newest = self.span()[1] if self._n else None
            if newest is not None and t <= newest and newest - t <= self._ns(c.reset_gap_s):
                return True  # older than the history's end: its speed is used from now on
            if newest is None or abs(t - newest) > self._ns(c.reset_gap_s):
                self._restart()
                self._append(t, np.eye(3), np.zeros(3), v.copy(), w, np.zeros(3))
                return True
            self._step(t, 0.5 * (self._w[self._newest()] + w), None, w, None)
        return True

    # ------------------------------------------------------------ integration
    def _restart(self) -> None:
        biases = (self.gyro_bias.copy(), self.accel_bias.copy())
        odo = self._odo
        had = self._n > 0
        self._reset_state()
        self.gyro_bias, self.accel_bias = biases
        self._odo = odo
        if had:
            self.stats.resets += 1

    def _start(self, t: int, w_b: np.ndarray, f_b: np.ndarray) -> None:
        R = np.eye(3)  # level, heading 0 (re-levelled once stationary)
        v = np.zeros(3)
        if self._odo is not None and self._odometry_fresh(t):
            v = self._odo[1].copy()
        self._append(t, R, np.zeros(3), v, w_b, np.zeros(3))

    def _body_velocity(self, t: int) -> np.ndarray:
        t0, v, _, a = self._odo  # type: ignore[misc]
        return v + a * ((t - t0) / NS_PER_S)

    def _step(self, t: int, w_mean: np.ndarray, f_mean: np.ndarray | None,
              w_new: np.ndarray, f_new: np.ndarray | None) -> None:
        """Integrate from the newest knot to `t` with constant rate `w_mean` and force `f_mean`."""
        i = self._newest()
        dt = (t - int(self._t[i])) / NS_PER_S
        R_i, p_i, v_i = self._R[i], self._p[i], self._v[i]
        R_new = R_i @ _exp(w_mean * dt)
        if f_mean is not None and not self._odometry_fresh(t):
            a = R_i @ _exp(w_mean * (0.5 * dt)) @ f_mean - _G_W  # IMU-only
            v_new = v_i + a * dt
        else:
            v_new = R_new @ self._body_velocity(t)
            a = (v_new - v_i) / dt
        p_new = p_i + v_i * dt + 0.5 * a * dt * dt
        self._w[i] = w_mean
        self._a[i] = a
        if f_new is not None and not self._odometry_fresh(t):
            a_hold = R_new @ f_new - _G_W
        else:  # body velocity held, turning with the body: centripetal acceleration
            a_hold = R_new @ _cross(w_new, R_new.T @ v_new)
        self._append(t, R_new, p_new, v_new, w_new, a_hold)

    # ------------------------------------------------------------ stationarity
    def _update_stationarity(self, t: int, w_raw: np.ndarray, f_raw: np.ndarray) -> None:
        """Sliding-window test on raw samples; running sums keep it O(1) per sample."""
        c = self.config
        win = self._win
        x = np.concatenate([w_raw, f_raw])
        win.append((t, x))
        self._win_sum += x
        self._win_sq += x * x
        span = self._ns(c.still_window_s)
        while len(win) > 2 and t - win[1][0] >= span:
            _, old = win.popleft()
            self._win_sum -= old
            self._win_sq -= old * old
        still = False
        m = len(win)
        if t - win[0][0] >= span * 0.9 and m >= 5:
            mean = self._win_sum / m
            std = np.sqrt(np.maximum(self._win_sq / m - mean * mean, 0.0))
            still = bool(
                np.all(std[:3] < c.still_gyro_std)
                and np.all(std[3:] < c.still_accel_std)
                and np.linalg.norm(mean[:3] - self.gyro_bias) < c.still_gyro_mean
                and abs(np.linalg.norm(mean[3:] - self.accel_bias) - GRAVITY) < c.still_accel_norm
            )
            if still:
                if self._odo is not None and self._odometry_fresh(t):
                    still = (float(np.linalg.norm(self._odo[1])) < c.still_speed_m_s
                             and float(np.linalg.norm(self._odo[2])) < c.still_gyro_mean)
                elif self._n:
                    still = float(np.linalg.norm(self._v[self._newest()])) < c.still_est_speed_m_s
            if still and not self._still:
                self._still_sum = self._win_sum.copy()
                self._still_cnt = m
            elif still:
                self._still_sum += x
                self._still_cnt += 1
        self._still = still
        if not still:
            self._still_cnt = 0

    def _apply_stationary(self) -> None:
        """Zero velocity, gyro bias, accel bias along gravity and re-levelling while stationary."""
        self.stats.stationary_samples += 1
        i = self._newest()
        if i > self._s:  # the interval just integrated was still too: no rotation, stop smoothly
            j = i - 1
            dt = (int(self._t[i]) - int(self._t[j])) / NS_PER_S
            self._w[j] = 0.0
            self._a[j] = -self._v[j] / dt
            self._R[i] = self._R[j]
            self._p[i] = self._p[j] + 0.5 * self._v[j] * dt
        self._v[i] = 0.0
        self._a[i] = 0.0
        self._w[i] = 0.0
        if self._still_cnt < 20:
            return
        mean = self._still_sum / self._still_cnt
        self.gyro_bias = mean[:3].copy()
        f = mean[3:]
        fn = float(np.linalg.norm(f))
        self.accel_bias = (fn - GRAVITY) * f / fn
        g_b = self._R_bi @ f
        g_b /= np.linalg.norm(g_b)
        pitch = float(np.arcsin(np.clip(-g_b[0], -1.0, 1.0)))
        roll = float(np.arctan2(g_b[1], g_b[2]))
        _, _, yaw = matrix_to_rpy(self._R[i])
        self._R[i] = rpy_to_matrix(roll, pitch, yaw)
        self._last_wb = np.zeros(3)
        self.stats.bias_updates += 1

    # ----------------------------------------------------------------- queries
    def covers(self, t_ns: int) -> bool:
        """Whether `t_ns` can be queried (inside the history or within the extrapolation limit)."""
        if self._n == 0:
            return False
        t0, t1 = self.span()
        return t0 <= t_ns <= t1 + self._ns(self.config.max_extrapolation_s)

    def check(self, t_from_ns: int, t_to_ns: int) -> str | None:
        """None when a relative pose between the two times is trustworthy, else why not.

        Reasons: ``empty``, ``before_history``, ``after_history``, ``long_gap``
        (the span crosses an IMU gap longer than ``max_bridge_s``).
        """
        if self._n == 0:
            return "empty"
        lo, hi = min(t_from_ns, t_to_ns), max(t_from_ns, t_to_ns)
        t0, t1 = self.span()
        if lo < t0:
            return "before_history"
        if hi > t1 + self._ns(self.config.max_extrapolation_s):
            return "after_history"
        sl = slice(self._s, self._s + self._n)
        ts = self._t[sl]
        a = max(int(np.searchsorted(ts, lo, side="right")) - 1, 0)
        b = int(np.searchsorted(ts, hi, side="left"))
        if np.any(self._flag[sl][a:b] & _FLAG_LONG_GAP):
            return "long_gap"
        return None

    def _locate(self, times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._n == 0:
            raise OutOfHistory("pose history is empty")
        sl = slice(self._s, self._s + self._n)
        ts = self._t[sl]
        t0, t1 = int(ts[0]), int(ts[-1])
        lo, hi = int(times_ns.min()), int(times_ns.max())
        if lo < t0 or hi > t1 + self._ns(self.config.max_extrapolation_s):
            raise OutOfHistory(f"query [{lo}, {hi}] ns outside the history [{t0}, {t1}] ns "
                               f"(+{self.config.max_extrapolation_s} s extrapolation)")
        idx = np.clip(np.searchsorted(ts, times_ns, side="right") - 1, 0, self._n - 1) + self._s
        tau = (times_ns - self._t[idx]).astype(np.float64) / NS_PER_S
        return idx, tau

    def poses(self, times_ns) -> tuple[np.ndarray, np.ndarray]:
        """(R (N,3,3), p (N,3)) of base_link in W at each time (vectorised `pose`)."""
        times = np.atleast_1d(np.asarray(times_ns, dtype=np.int64))
        idx, tau = self._locate(times)
        R = self._R[idx] @ so3_exp(self._w[idx] * tau[:, None])
        p = self._p[idx] + self._v[idx] * tau[:, None] + 0.5 * self._a[idx] * (tau * tau)[:, None]
        return R, p

    def pose(self, t_ns: int) -> np.ndarray:
        """T_W_B(t): base_link at `t_ns` → the history frame W (4×4)."""
        R, p = self.poses([t_ns])
        return make_transform(R[0], p[0])

    def relative_pose(self, t_from_ns: int, t_to_ns: int) -> np.ndarray:
        """Pose of base_link at `t_from_ns` expressed in base_link at `t_to_ns` (4×4).

        ``p_to = relative_pose(t_from, t_to) @ p_from`` moves a point measured in
        base_link at t_from into base_link at t_to (static-world assumption).
        Raises OutOfHistory when a time is outside the history (see `covers`).
        """
        R, p = self.poses([t_from_ns, t_to_ns])
        return make_transform(R[1].T @ R[0], R[1].T @ (p[0] - p[1]))

    def relative_poses(self, times_from_ns, t_to_ns: int) -> np.ndarray:
        """(N, 4, 4) `relative_pose(t, t_to_ns)` for each t in `times_from_ns`."""
        times = np.atleast_1d(np.asarray(times_from_ns, dtype=np.int64))
        R, p = self.poses(np.append(times, np.int64(t_to_ns)))
        Rt = R[-1].T
        out = np.zeros((len(times), 4, 4))
        out[:, :3, :3] = Rt @ R[:-1]
        out[:, :3, 3] = (p[:-1] - p[-1]) @ Rt.T
        out[:, 3, 3] = 1.0
        return out

    def velocity(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(linear velocity over ground, angular velocity) of base_link at `t_ns`, base_link axes."""
        times = np.array([t_ns], dtype=np.int64)
        idx, tau = self._locate(times)
        i, dt = int(idx[0]), float(tau[0])
        w = self._w[i].copy()
        R = self._R[i] @ so3_exp(w * dt)
        v_w = self._v[i] + self._a[i] * dt
        return R.T @ v_w, w
