"""IMU and wheel odometry from the ego trajectory.

IMU: specific force f = a − g in the IMU frame (a stationary IMU reads +9.81 on
z, REP 103), angular rate ω, both with a constant turn-on bias and white noise.
Discrete white-noise σ = noise density · √rate (IEEE Std 952 / Allan-variance
convention), densities from the rig (BMI088 datasheet). The ego drives on flat
ground, so roll/pitch are zero; the lever arm from base_link is honoured.

Odometry: what a vehicle's ECU publishes: wheel-speed sensors with a scale
error (tyre radius / pressure, drawn once per drive) and white noise, a yaw
rate with bias and noise, integrated by dead reckoning in `odom` — so it drifts
like the real thing. Twist in base_link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.rig import SensorSpec
from ..core.transforms import yaw_to_quat
from ..core.types import ImuSample, Odometry
from .ego import EgoTrajectory

GRAVITY = 9.80665


@dataclass
class ImuModel:
    spec: SensorSpec
    rng: np.random.Generator
    gyro_bias: np.ndarray = field(init=False)
    accel_bias: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        m = self.spec.model
        self.gyro_bias = self.rng.normal(0, float(m.get("gyro_bias_sigma", 1e-3)), 3)
        self.accel_bias = self.rng.normal(0, float(m.get("accel_bias_sigma", 0.02)), 3)

    def sample(self, ego: EgoTrajectory, t: float, noise_scale: float = 1.0, stamp_ns: int = 0) -> ImuSample:
        m = self.spec.model
        v, a, w = ego.kinematics(t)
        _, a_prev, w_prev = ego.kinematics(t - 0.01)
        w_dot = (w - w_prev) / 0.01
        omega = np.array([0.0, 0.0, float(w)])
        f_base = np.array([float(a), float(v * w), GRAVITY])
        r = self.spec.extrinsic[:3, 3]
        # Lever arm: a_imu = a_base + ω̇ × r + ω × (ω × r).
        f_base = f_base + np.cross([0.0, 0.0, w_dot], r) + np.cross(omega, np.cross(omega, r))
        Rt = self.spec.extrinsic[:3, :3].T
        rate = self.spec.rate_hz
        sg = float(m.get("gyro_noise_density", 2.44e-4)) * np.sqrt(rate) * noise_scale
        sa = float(m.get("accel_noise_density", 1.72e-3)) * np.sqrt(rate) * noise_scale
        gyro = Rt @ omega + self.gyro_bias + self.rng.normal(0, sg, 3)
        acc = Rt @ f_base + self.accel_bias + self.rng.normal(0, sa, 3)
        return ImuSample(stamp_ns=stamp_ns, frame_id=self.spec.frame_id, angular_velocity=gyro,
                         linear_acceleration=acc, orientation=None,
                         angular_velocity_cov=np.eye(3) * sg**2, linear_acceleration_cov=np.eye(3) * sa**2)


@dataclass
class WheelOdometry:
    spec: SensorSpec
    rng: np.random.Generator
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    t_last: float | None = None
    scale: float = field(init=False)
    yaw_bias: float = field(init=False)

    def __post_init__(self) -> None:
        m = self.spec.model
        self.scale = 1.0 + self.rng.normal(0, float(m.get("speed_noise_frac", 0.01)))
        self.yaw_bias = self.rng.normal(0, 0.2 * float(m.get("yaw_rate_noise", 0.005)))

    def sample(self, ego: EgoTrajectory, t: float, noise_scale: float = 1.0, stamp_ns: int = 0) -> Odometry:
        m = self.spec.model
        v, _, w = ego.kinematics(t)
        v_m = float(v) * self.scale + self.rng.normal(0, 0.02 * noise_scale)  # 0.02 m/s tick quantisation
        w_m = float(w) + self.yaw_bias + self.rng.normal(0, float(m.get("yaw_rate_noise", 0.005)) * noise_scale)
        if self.t_last is not None:
            dt = t - self.t_last
            mid = self.yaw + 0.5 * w_m * dt
            self.x += v_m * np.cos(mid) * dt
            self.y += v_m * np.sin(mid) * dt
            self.yaw += w_m * dt
        self.t_last = t
        sv = max(float(m.get("speed_noise_frac", 0.01)) * abs(v_m), 0.02)
        sw = float(m.get("yaw_rate_noise", 0.005))
        twist_cov = np.diag([sv**2, 1e-4, 1e-4, 1e-4, 1e-4, sw**2])
        pose_cov = np.diag([0.01 + 1e-4 * (self.x**2 + self.y**2)] * 2 + [1e-4, 1e-4, 1e-4, 1e-3])
        return Odometry(stamp_ns=stamp_ns, frame_id=self.spec.frame_id,
                        child_frame_id=self.spec.child_frame_id or "base_link",
                        position=np.array([self.x, self.y, 0.0]), orientation=yaw_to_quat(self.yaw),
                        linear_velocity=np.array([v_m, 0.0, 0.0]), angular_velocity=np.array([0.0, 0.0, w_m]),
                        pose_cov=pose_cov, twist_cov=twist_cov)
