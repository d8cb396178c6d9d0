"""LiDAR mount height from the road: a RANSAC ground-plane fit per sweep (open3d), median over sweeps.

Why: a converter must put base_link on the ground under the LiDAR, and datasets such as
View-of-Delft do not publish the mount height. Estimating it from the labelled boxes'
bottoms mixes label noise, kerbs and parked cars on pavements into one number, which swung
from 1.27 to 1.90 m between frames of one sensor; the road itself, seen in every sweep,
is a much steadier witness. The fit keeps the returns within `GROUND_RANGE_M` of the
sensor and below it, finds the dominant plane with open3d's `segment_plane`, and accepts
it only if it is nearly horizontal and holds a real share of those returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Returns used for the fit: between these horizontal ranges [m] (close ones hit the ego car, far
#: ones are sparse and bent by pitch).
GROUND_RANGE_M = (3.0, 30.0)
#: RANSAC inlier distance [m]: road roughness and the ~2 cm range noise of automotive LiDARs.
PLANE_DISTANCE_M = 0.08
#: The plane's normal must be within this angle of the sensor's z axis [deg] (a mounting pitch of a few
#: degrees passes; a wall or a façade does not).
MAX_TILT_DEG = 10.0
#: Minimum inliers, absolute and as a share of the candidate returns, for a sweep to count.
MIN_INLIERS = 200
MIN_INLIER_SHARE = 0.2
RANSAC_ITERATIONS = 200


@dataclass(frozen=True)
class GroundFit:
    """Median height of the sweeps' origin above the fitted road, with its spread, and the road's mean up normal
    in the sweeps' frame (how a converter levels base_link when its reference sensor is mounted tilted)."""

    height_m: float
    sweeps_used: int
    sweeps_seen: int
    q25_m: float
    q75_m: float
    normal: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def tilt_deg(self) -> float:
        return float(np.degrees(np.arccos(np.clip(self.normal[2], -1.0, 1.0))))

    def describe(self) -> str:
        return (f"ground fit: {self.height_m:.3f} m (median of {self.sweeps_used}/{self.sweeps_seen} sweeps, "
                f"IQR {self.q25_m:.3f}-{self.q75_m:.3f} m; road tilted {self.tilt_deg():.1f} deg in the sensor frame)")

    def level_rotation(self) -> np.ndarray:
        """The smallest rotation that turns the road's normal into +z (no change of heading): 3×3."""
        from scipy.spatial.transform import Rotation

        n = np.asarray(self.normal, np.float64)
        if np.allclose(n, (0.0, 0.0, 1.0)):
            return np.eye(3)
        rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [n])
        return rot.as_matrix()


def sweep_ground_height(xyz: np.ndarray, seed: int = 0) -> float | None:
    """Height of the sensor origin above the road plane of one sweep (sensor frame, z up), or None."""
    plane = sweep_ground_plane(xyz, seed)
    return None if plane is None else plane[1]


def sweep_ground_plane(xyz: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float] | None:
    """(unit up normal, height of the origin above it) of one sweep's road plane, or None."""
    import open3d as o3d

    p = np.asarray(xyz, np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(axis=1)]
    r = np.hypot(p[:, 0], p[:, 1])
    p = p[(r >= GROUND_RANGE_M[0]) & (r <= GROUND_RANGE_M[1]) & (p[:, 2] < 0.0)]
    if len(p) < MIN_INLIERS:
        return None
    o3d.utility.random.seed(seed)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    (a, b, c, d), inliers = cloud.segment_plane(PLANE_DISTANCE_M, 3, RANSAC_ITERATIONS)
    norm = float(np.linalg.norm((a, b, c)))
    if norm == 0.0 or len(inliers) < max(MIN_INLIERS, MIN_INLIER_SHARE * len(p)):
        return None
    if abs(c) / norm < np.cos(np.radians(MAX_TILT_DEG)):
        return None
    # RANSAC's plane runs through 3 of the returns; the least-squares plane of all its inliers (the
    # smallest principal axis, numpy SVD) is the better estimate of the normal and height.
    q = p[np.asarray(inliers)]
    centre = q.mean(axis=0)
    n = np.linalg.svd(q - centre, full_matrices=False)[2][2]
    n = n * (1.0 if n[2] > 0 else -1.0)  # pointing up
    return n, abs(float(n @ centre))


def fit_lidar_height(sweeps: Iterable[np.ndarray]) -> GroundFit | None:
    """The median of the sweeps' road heights (and their mean normal); None when no sweep shows a road."""
    heights, normals, seen = [], [], 0
    for i, xyz in enumerate(sweeps):
        seen += 1
        plane = sweep_ground_plane(xyz, seed=i)
        if plane is not None:
            normals.append(plane[0])
            heights.append(plane[1])
    if not heights:
        return None
    q25, med, q75 = np.percentile(heights, [25, 50, 75])
    n = np.median(np.asarray(normals), axis=0)
    n /= np.linalg.norm(n)
    return GroundFit(float(med), len(heights), seen, float(q25), float(q75), (float(n[0]), float(n[1]), float(n[2])))
