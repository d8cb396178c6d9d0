"""Training copies of a recording seen from a base_link turned about z (`ros-fusion dataset --yaw-copies`).

A real training set is small and every frame looks straight down the road. Turning `base_link` by
an angle θ about its z axis (and leaving the sensors where they are) is exact: the sensor messages
are in their own frames and do not change, only each sensor's extrinsic becomes Rz(θ)·E and the
ground-truth boxes turn with the frame (centre and velocity rotated, yaw + θ). The live pre-processing
then rasterises the same points into a turned grid, with each camera's pixels lifted to the turned
cells, so nothing is resampled or approximated. CenterPoint (Yin et al., CVPR 2021) trains with global
rotations of the same kind; the lateral mirror, which cannot be made this way (it would mirror the
images), is done in training (`models.augment`).

Not for rigs with odometry: an odometry message states base_link's own motion, which would have to
turn with it; such a rig is refused.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..core.rig import Rig, rig_from_dict
from ..core.types import Modality, Obstacles

Message = tuple[str, int, Any]


def rz(theta: float) -> np.ndarray:
    """4×4 rotation by `theta` [rad] about z."""
    c, s = np.cos(theta), np.sin(theta)
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    return T


def copy_angles(key: str, copies: int, max_deg: float) -> list[float]:
    """`copies` angles [rad] uniform in ±max_deg, the same for the same `key` (e.g. the bag's sha256)."""
    if copies < 0 or not 0.0 < max_deg <= 180.0:
        raise ValueError(f"yaw copies must be >= 0 and the angle in (0, 180] degrees, got {copies}, {max_deg}")
    seed = int(hashlib.sha256(f"yaw/{key}".encode()).hexdigest()[:8], 16)
    return [float(a) for a in np.deg2rad(np.random.default_rng(seed).uniform(-max_deg, max_deg, copies))]


def rotated_rig(rig: Rig, theta: float) -> Rig:
    """The rig with base_link turned by `theta` about z: every extrinsic E becomes Rz(θ)·E."""
    if rig.of(Modality.ODOMETRY):
        raise ValueError(f"rig '{rig.name}' has odometry (base_link's own motion): a turned base_link would need "
                         "the odometry turned too; yaw copies are for rigs without it")
    raw = copy.deepcopy(rig.raw)
    T = rz(theta)
    for name, spec in rig.sensors.items():
        raw["sensors"][name]["extrinsics"] = {"matrix": (T @ spec.extrinsic).tolist()}
    return rig_from_dict(raw, f"{rig.source} turned {np.rad2deg(theta):+.1f} deg")


def rotated_obstacles(obs: Obstacles, theta: float) -> Obstacles:
    """Boxes of `obs` in the turned base_link: centre and velocity rotated, yaw + θ (wrapped to (-π, π])."""
    b = np.array(obs.boxes, np.float64, copy=True)
    R = rz(theta)[:2, :2]
    b[:, 0:2] = b[:, 0:2] @ R.T
    b[:, 7:9] = b[:, 7:9] @ R.T
    b[:, 6] = np.angle(np.exp(1j * (b[:, 6] + theta)))
    return Obstacles(obs.stamp_ns, obs.frame_id, b.astype(np.asarray(obs.boxes).dtype), obs.scores, obs.labels,
                     obs.weights, obs.num_points)


def rotated_messages(messages: Iterable[Message], ground_truth_topic: str, theta: float) -> Iterator[Message]:
    """The recording with its ground truth turned (sensor messages are in sensor frames: unchanged)."""
    for topic, t, payload in messages:
        if topic == ground_truth_topic and isinstance(payload, Obstacles):
            payload = rotated_obstacles(payload, theta)
        yield topic, t, payload


__all__ = ["copy_angles", "rotated_messages", "rotated_obstacles", "rotated_rig", "rz"]
