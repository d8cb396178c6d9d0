"""Synthetic LiDAR scenes for the geometric detector's tests and benchmark: ray-cast, so objects show only the
faces a LiDAR sees (open3d's RaycastingScene against box/prism meshes of `ros_fusion.sim.meshes`).

A scene is built on flat ground and then sheared, z += grade * x, so the road, the kerbs and everything on
them follow a constant grade while walls stay vertical; truth boxes get the same shift at their centre.
The sensor sits `SENSOR_HEIGHT` above base_link (which is on the ground at x = 0), like KITTI's HDL-64E.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from ros_fusion.sim import meshes

SENSOR_HEIGHT = 1.73


@dataclass(frozen=True)
class Lidar:
    """A rotating multi-beam LiDAR: beams evenly spread over `vfov_deg`, `columns` azimuth steps."""

    beams: int
    vfov_deg: tuple[float, float]
    columns: int
    max_range: float = 100.0
    range_noise: float = 0.02
    dropout: float = 0.02


HDL32 = Lidar(32, (-30.67, 10.67), 1800)
HDL64 = Lidar(64, (-24.9, 2.0), 2250)


@dataclass
class Scene:
    """World geometry (flat, before the grade shear) and the truth of the objects a detector should find."""

    grade: float = 0.0
    verts: list[np.ndarray] = field(default_factory=list)
    faces: list[np.ndarray] = field(default_factory=list)
    truth: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (class, [x y z l w h yaw]) sheared

    def _add(self, v: np.ndarray, f: np.ndarray) -> None:
        base = sum(len(a) for a in self.verts)
        self.verts.append(np.asarray(v, np.float64))
        self.faces.append(np.asarray(f, np.int64) + base)

    def box(self, x: float, y: float, z_bottom: float, l: float, w: float, h: float, yaw: float = 0.0) -> None:
        v, f = meshes.boxes(np.array([[x, y, z_bottom + h / 2]]), np.array([[l, w, h]]), np.array([yaw]))
        self._add(v, f)

    def prism(self, x: float, y: float, z_bottom: float, radius: float, h: float) -> None:
        v, f = meshes.prisms(np.array([[x, y, z_bottom + h / 2]]), np.array([radius]), np.array([h]))
        self._add(v, f)

    def ground(self, half: float = 120.0) -> None:
        v = np.array([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
        self._add(v, np.array([[0, 1, 2], [0, 2, 3]]))

    def kerb(self, y_from: float, y_to: float, height: float = 0.15, x_from: float = -120.0,
             x_to: float = 120.0) -> None:
        """A raised pavement slab between two lateral offsets."""
        self.box((x_from + x_to) / 2, (y_from + y_to) / 2, 0.0, x_to - x_from, abs(y_to - y_from), height)

    def car(self, x: float, y: float, yaw: float, l: float = 4.5, w: float = 1.85, h: float = 1.5,
            z0: float = 0.0, name: str = "car") -> None:
        """Lower body, narrower cabin and four wheels; the truth box is their bounding box."""
        c, s = np.cos(yaw), np.sin(yaw)

        def at(dx: float, dy: float) -> tuple[float, float]:
            return x + c * dx - s * dy, y + s * dx + c * dy

        body_top = z0 + 0.6 * h
        self.box(*at(0.0, 0.0), z0 + 0.3, l, w, body_top - z0 - 0.3, yaw)
        self.box(*at(-0.05 * l, 0.0), body_top, 0.55 * l, 0.88 * w, z0 + h - body_top, yaw)
        for sx in (-0.33, 0.33):
            for sy in (-1, 1):
                self.box(*at(sx * l, sy * (w / 2 - 0.12)), z0, 0.65, 0.24, 0.6, yaw)
        self.truth.append((name, np.array([x, y, z0 + h / 2 + self.grade * x, l, w, h, yaw])))

    def pedestrian(self, x: float, y: float, z0: float = 0.0, h: float = 1.75) -> None:
        """Two legs, a torso and a head (prisms), as a LiDAR sees a standing person."""
        for dy in (-0.1, 0.1):
            self.prism(x, y + dy, z0, 0.08, 0.85 * h / 1.75)
        self.prism(x, y, z0 + 0.85 * h / 1.75, 0.2, 0.65 * h / 1.75)
        self.prism(x, y, z0 + 1.5 * h / 1.75, 0.1, 0.25 * h / 1.75)
        self.truth.append(("pedestrian", np.array([x, y, z0 + h / 2 + self.grade * x, 0.5, 0.45, h, 0.0])))

    def cyclist(self, x: float, y: float, yaw: float, z0: float = 0.0) -> None:
        """Two wheels, a frame and a rider, 1.76 x 0.6 x 1.73 m overall."""
        c, s = np.cos(yaw), np.sin(yaw)
        for d in (-0.55, 0.55):
            self.box(x + c * d, y + s * d, z0, 0.66, 0.06, 0.66, yaw)
        self.box(x, y, z0 + 0.45, 1.0, 0.08, 0.1, yaw)
        self.box(x - 0.1 * c, y - 0.1 * s, z0 + 0.85, 0.35, 0.42, 0.6, yaw)
        self.box(x + 0.25 * c, y + 0.25 * s, z0 + 1.45, 0.22, 0.22, 0.28, yaw)
        self.truth.append(("cyclist", np.array([x, y, z0 + 0.865 + self.grade * x, 1.76, 0.6, 1.73, yaw])))

    def sweep(self, lidar: Lidar, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) float32 base_link points and (N,) intensities of one sweep from (0, 0, SENSOR_HEIGHT)."""
        rng = np.random.default_rng(seed)
        v = np.concatenate(self.verts).copy()
        v[:, 2] += self.grade * v[:, 0]
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)),
                            o3d.core.Tensor(np.concatenate(self.faces).astype(np.uint32)))
        el = np.deg2rad(np.linspace(*lidar.vfov_deg, lidar.beams))
        az = np.linspace(-np.pi, np.pi, lidar.columns, endpoint=False)
        E, A = np.meshgrid(el, az, indexing="ij")
        d = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3)
        rays = np.hstack([np.tile([0.0, 0.0, SENSOR_HEIGHT], (len(d), 1)), d]).astype(np.float32)
        t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
        hit = np.isfinite(t) & (t < lidar.max_range) & (rng.random(len(t)) >= lidar.dropout)
        t = t[hit] + rng.normal(0.0, lidar.range_noise, hit.sum())
        pts = np.array([0.0, 0.0, SENSOR_HEIGHT]) + d[hit] * t[:, None]
        return pts.astype(np.float32), rng.uniform(0.0, 1.0, len(pts)).astype(np.float32)


def graded_street(grade: float = 0.03) -> Scene:
    """The test scene: a graded road between kerbs, a wall behind the left pavement, two cars at 20-30 m
    (one turning), a pedestrian on the pavement."""
    s = Scene(grade=grade)
    s.ground()
    s.kerb(6.0, 12.0)
    s.kerb(-12.0, -6.0)
    s.box(15.0, 10.5, 0.15, 50.0, 0.3, 2.5)  # wall along the left pavement, 50 m long
    s.car(22.0, -2.5, 0.12)
    s.car(27.0, 3.0, -0.45, l=4.2, w=1.8, h=1.45)
    s.pedestrian(14.0, 8.0, z0=0.15)
    return s


def street_scene(seed: int = 0) -> Scene:
    """A busy urban street for the benchmark: buildings, parked and moving cars, a truck, pedestrians,
    cyclists, trees and poles on a 2 % grade."""
    rng = np.random.default_rng(seed)
    s = Scene(grade=0.02)
    s.ground()
    s.kerb(5.5, 14.0)
    s.kerb(-14.0, -5.5)
    for side in (-1.0, 1.0):
        x = -60.0
        while x < 60.0:
            length = rng.uniform(8.0, 20.0)
            s.box(x + length / 2, side * rng.uniform(14.0, 16.0), 0.15, length, 4.0, rng.uniform(6.0, 15.0))
            x += length + rng.uniform(0.0, 4.0)
        for x in np.arange(-45.0, 45.0, rng.uniform(5.5, 7.0)):
            if rng.random() < 0.7:
                s.car(x + rng.normal(0, 0.3), side * 4.3, rng.normal(0, 0.05), l=rng.uniform(3.8, 4.9))
        for x in rng.uniform(-40, 40, 5):
            s.prism(x, side * 6.2, 0.15, 0.15, 3.0)  # tree trunk
            s.box(x, side * 6.2, 3.0, 3.5, 3.5, 2.5)  # canopy
        for x in rng.uniform(-40, 40, 4):
            s.prism(x, side * 5.8, 0.15, 0.05, 4.0)  # pole
        for x in rng.uniform(-30, 30, 4):
            s.pedestrian(x, side * rng.uniform(7.0, 12.0), z0=0.15)
    for x in (-25.0, 12.0, 30.0):
        s.car(x, -1.7, 0.0)
    s.car(18.0, 1.7, np.pi)
    s.box(-12.0, 1.7, 0.0, 8.0, 2.5, 3.2)  # truck
    s.truth.append(("truck", np.array([-12.0, 1.7, 1.6 - 0.02 * 12.0, 8.0, 2.5, 3.2, 0.0])))
    s.cyclist(4.0, -1.7, 0.0)
    s.cyclist(28.0, 1.7, np.pi)
    return s


def sweep_of(scene: Scene, lidar: Lidar, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A sweep resampled to exactly n points (drawn without replacement when enough, else with)."""
    pts, inten = scene.sweep(lidar, seed)
    idx = np.random.default_rng(seed).choice(len(pts), n, replace=len(pts) < n)
    idx.sort()
    return pts[idx], inten[idx]
