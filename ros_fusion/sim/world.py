"""The synthetic world: road, ego trajectory, moving actors, static clutter, ray casting.

Actors are described by a few numbers each (lane offset, speed, phase, ...)
and evaluated for all actors at once at any time, so every sensor can ask for
the world at its own capture time (a LiDAR per azimuth chunk). Ray casting uses
Open3D's `RaycastingScene`: one static scene built once (ground, road surface,
buildings, poles, trees, walls, guardrails) and one small dynamic scene per
query time holding the actors near the ego. Per-triangle maps tell each hit
which object, material and (for the road) which centreline segment it hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from . import meshes
from .catalog import CLASSES, MAT, PAINT_P, PAINTS
from .ego import EgoTrajectory, build_ego
from .road import Road, RoadLayout, build_road
from .scenarios import Scenario

ACTOR_CULL_M = 130.0  # actors farther than this from the ego are left out of a dynamic scene


@dataclass
class Actors:
    """Column arrays, one row per actor. Motion: s(t) = s0 + vs t + amp sin(w t + ph)
    (or, for followers of the ego, s = s_ego(t) + s0 + ...), d(t) = clip(d0 + vd t, dlo, dhi)."""

    cls: np.ndarray  # int label index into DEFAULT_CLASSES
    size: np.ndarray  # (M,3) l, w, h
    material: np.ndarray
    rgb: np.ndarray  # (M,3) camera albedo
    s0: np.ndarray
    vs: np.ndarray
    amp: np.ndarray
    w: np.ndarray
    ph: np.ndarray
    d0: np.ndarray
    vd: np.ndarray
    dlo: np.ndarray
    dhi: np.ndarray
    yaw_off: np.ndarray
    follows_ego: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.cls)


@dataclass
class ActorState:
    """Actors at one time: world centre (M,3), yaw (M,), velocity over ground (M,2)."""

    centre: np.ndarray
    yaw: np.ndarray
    vel: np.ndarray


@dataclass
class StaticObjects:
    centre: np.ndarray  # (K,3)
    size: np.ndarray  # (K,3) l,w,h; prisms: (2r, 2r, h)
    yaw: np.ndarray
    material: np.ndarray
    prism: np.ndarray  # bool


@dataclass
class Hits:
    """Result of a ray cast. `obj` ≥ 0 with `dynamic` → actor index; static objects
    index StaticObjects; −1 road surface, −2 ground plane, and `t` = inf for no hit."""

    t: np.ndarray
    normal: np.ndarray  # (N,3) world, facing the ray origin
    material: np.ndarray
    obj: np.ndarray
    dynamic: np.ndarray
    road_seg: np.ndarray  # centreline sample index for road hits, else -1


class World:
    def __init__(self, scenario: Scenario, seed: int, duration_s: float) -> None:
        self.scenario = scenario
        rng = np.random.default_rng([seed, 1])
        sc = scenario
        layout = RoadLayout(sc.lane_width, sc.lanes_per_dir, sc.sidewalk, sc.urban)
        self.s_start = 200.0
        length = self.s_start + sc.speed_range[1] * 1.1 * (duration_s + 2.0) + 400.0
        self.road: Road = build_road(rng, length, layout, sc.radius_range, sc.straight_range)
        self.ego: EgoTrajectory = build_ego(rng, self.road, duration_s, self.s_start, sc.speed_range)
        self.duration_s = duration_s
        self.actors = _populate_actors(rng, sc, self.road, self.ego, duration_s)
        self.static = _populate_static(rng, sc, self.road)
        self._build_static_scene()
        self._dyn_cache: tuple | None = None

    # ----------------------------------------------------------------- actors
    def actor_state(self, t: float) -> ActorState:
        a = self.actors
        pos, yaw = self._actor_pose(t)
        p0, _ = self._actor_pose(t - 0.01)
        p1, _ = self._actor_pose(t + 0.01)
        vel = (p1[:, :2] - p0[:, :2]) / 0.02
        del a
        return ActorState(pos, yaw, vel)

    def _actor_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        a = self.actors
        base = np.where(a.follows_ego, self.ego.centre_s(t), 0.0)
        s = base + a.s0 + a.vs * t + a.amp * np.sin(a.w * t + a.ph)
        d = np.clip(a.d0 + a.vd * t, a.dlo, a.dhi)
        x, y, h = self.road.point(s, d)
        centre = np.stack([x, y, a.size[:, 2] / 2], 1)
        return centre, h + a.yaw_off

    # ------------------------------------------------------------- ray casting
    def _build_static_scene(self) -> None:
        st = self.static
        vb, fb = meshes.boxes(st.centre[~st.prism], st.size[~st.prism], st.yaw[~st.prism])
        vp, fp = meshes.prisms(st.centre[st.prism], st.size[st.prism, 0] / 2, st.size[st.prism, 2])
        idx_box = np.flatnonzero(~st.prism)
        idx_pri = np.flatnonzero(st.prism)
        tri_obj = [np.repeat(idx_box, meshes.BOX_TRIS), np.repeat(idx_pri, meshes.PRISM_TRIS)]
        verts = [vb, vp]
        faces = [fb, fp + len(vb)]
        nv = len(vb) + len(vp)
        # Road surface strips every 1 m: right sidewalk/shoulder, carriageway, left sidewalk.
        road = self.road
        lay = road.layout
        step = max(int(round(1.0 / (road.s[1] - road.s[0]))), 1)
        idx = np.arange(0, len(road.s), step)
        ds_edges = np.array([-(lay.half_width + lay.sidewalk), -lay.half_width, lay.half_width,
                             lay.half_width + lay.sidewalk])
        xs, ys, _ = road.point(np.repeat(road.s[idx], 4), np.tile(ds_edges, len(idx)))
        rv = np.stack([xs, ys, np.zeros_like(xs)], 1)
        n = len(idx)
        q = np.arange(n - 1)[:, None] * 4 + np.arange(3)[None, :]  # (n-1, 3) lower-left corner per strip
        a0, a1, b0, b1 = q, q + 1, q + 4, q + 5
        rf = np.concatenate([np.stack([a0, a1, b1], -1), np.stack([a0, b1, b0], -1)], 0).reshape(-1, 3)
        strip = np.concatenate([np.tile(np.arange(3), n - 1)] * 2)
        seg = np.concatenate([np.repeat(idx[:-1], 3)] * 2)
        side_mat = MAT["sidewalk"] if lay.urban else MAT["asphalt"]
        verts.append(rv)
        faces.append(rf + nv)
        nv += len(rv)
        # Ground plane under everything, 2 cm below the road so the road wins.
        lo = np.array([road.x.min(), road.y.min()]) - 400.0
        hi = np.array([road.x.max(), road.y.max()]) + 400.0
        gv = np.array([[lo[0], lo[1], -0.02], [hi[0], lo[1], -0.02], [hi[0], hi[1], -0.02], [lo[0], hi[1], -0.02]])
        verts.append(gv)
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + nv)
        self._tri_obj = np.concatenate(tri_obj + [np.full(len(rf), -1), np.full(2, -2)]).astype(np.int32)
        self._tri_mat = np.concatenate([
            st.material[self._tri_obj[: len(tri_obj[0]) + len(tri_obj[1])]],
            np.where(strip == 1, MAT["asphalt"], side_mat), np.full(2, MAT["grass"]),
        ]).astype(np.int16)
        nst = len(tri_obj[0]) + len(tri_obj[1])
        self._tri_seg = np.full(len(self._tri_obj), -1, np.int32)
        self._tri_seg[nst: nst + len(rf)] = seg
        V = np.concatenate(verts).astype(np.float32)
        F = np.concatenate(faces).astype(np.uint32)
        self._static_V = V
        self._static_F = F
        self._static_scene = o3d.t.geometry.RaycastingScene()
        self._static_scene.add_triangles(o3d.core.Tensor(V), o3d.core.Tensor(F))

    def static_scene(self) -> o3d.t.geometry.RaycastingScene:
        return self._static_scene

    def dynamic_mesh(self, t: float, near_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, ActorState]:
        st = self.actor_state(t)
        keep = np.flatnonzero(np.hypot(*(st.centre[:, :2] - near_xy).T) < ACTOR_CULL_M)
        v, f = meshes.boxes(st.centre[keep], self.actors.size[keep], st.yaw[keep])
        return v, f, np.repeat(keep, meshes.BOX_TRIS).astype(np.int32), st

    def _dynamic_scene(self, t: float, near_xy: np.ndarray) -> tuple[o3d.t.geometry.RaycastingScene | None,
                                                                      np.ndarray]:
        """Scene of the actors at time `t`; the last one is cached (radar casts twice per scan)."""
        key = (float(t), float(near_xy[0]), float(near_xy[1]))
        if self._dyn_cache is not None and self._dyn_cache[0] == key:
            return self._dyn_cache[1], self._dyn_cache[2]
        v, f, tri_actor, _ = self.dynamic_mesh(t, near_xy)
        sc = None
        if len(f):
            sc = o3d.t.geometry.RaycastingScene()
            sc.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
        self._dyn_cache = (key, sc, tri_actor)
        return sc, tri_actor

    def cast(self, origins: np.ndarray, dirs: np.ndarray, t: float, near_xy: np.ndarray | None = None,
             chunks: list[tuple[slice, float]] | None = None) -> Hits:
        """Cast unit-direction rays against static geometry and the actors.

        Actors are placed at time `t`, or per `chunks` (ray slice, time) so a
        rotating sensor sees each sector with the actors where they were then.
        """
        n = len(origins)
        rays = np.empty((n, 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        r = self._static_scene.cast_rays(o3d.core.Tensor(rays))
        th = r["t_hit"].numpy().astype(np.float64)
        prim = r["primitive_ids"].numpy().astype(np.int64)
        nrm = r["primitive_normals"].numpy().astype(np.float64)
        hit = np.isfinite(th)
        primc = np.where(hit, prim, 0)
        obj = np.where(hit, self._tri_obj[primc], -3)
        mat = np.where(hit, self._tri_mat[primc], -1).astype(np.int16)
        seg = np.where(hit, self._tri_seg[primc], -1)
        dyn = np.zeros(n, bool)
        if near_xy is None:
            near_xy = origins[:, :2].mean(0) if n else np.zeros(2)
        for sl, tc in chunks or [(slice(0, n), t)]:
            sc, tri_actor = self._dynamic_scene(tc, near_xy)
            if sc is None:
                continue
            rd = sc.cast_rays(o3d.core.Tensor(np.ascontiguousarray(rays[sl])))
            td = rd["t_hit"].numpy().astype(np.float64)
            closer = np.isfinite(td) & (td < th[sl])
            if not closer.any():
                continue
            ii = np.arange(n)[sl][closer]
            th[ii] = td[closer]
            nrm[ii] = rd["primitive_normals"].numpy()[closer]
            act = tri_actor[rd["primitive_ids"].numpy()[closer].astype(np.int64)]
            obj[ii] = act
            mat[ii] = self.actors.material[act]
            seg[ii] = -1
            dyn[ii] = True
        flip = np.einsum("ij,ij->i", nrm, dirs) > 0
        nrm[flip] *= -1
        return Hits(th, nrm, mat, obj, dyn, seg)

    def road_sd(self, p: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Arc length and lateral offset of road-surface points from the segment they hit."""
        r = self.road
        h = r.heading[seg]
        dx, dy = p[:, 0] - r.x[seg], p[:, 1] - r.y[seg]
        c, s = np.cos(h), np.sin(h)
        return r.s[seg] + c * dx + s * dy, -s * dx + c * dy


# ------------------------------------------------------------------ population
def _actors_from_rows(rows: list[dict]) -> Actors:
    def col(k, dtype=np.float64):
        return np.array([r[k] for r in rows], dtype=dtype)

    if not rows:
        z = np.zeros(0)
        return Actors(np.zeros(0, np.int32), np.zeros((0, 3)), np.zeros(0, np.int16), np.zeros((0, 3)),
                      z, z, z, z, z, z, z, z, z, z, np.zeros(0, bool))
    return Actors(col("cls", np.int32), np.array([r["size"] for r in rows]), col("material", np.int16),
                  np.array([r["rgb"] for r in rows]), col("s0"), col("vs"), col("amp"), col("w"), col("ph"),
                  col("d0"), col("vd"), col("dlo"), col("dhi"), col("yaw_off"), col("follows_ego", bool))


def _sample_size(rng: np.random.Generator, name: str) -> list[float]:
    c = CLASSES[name]
    return [rng.uniform(*c.length), rng.uniform(*c.width), rng.uniform(*c.height)]


def _row(rng, name, s0, vs, d0, *, vd=0.0, dlo=-1e9, dhi=1e9, yaw_off=0.0, follows=False, amp=0.0) -> dict:
    c = CLASSES[name]
    if c.material == MAT["vehicle"]:
        rgb = PAINTS[rng.choice(len(PAINTS), p=PAINT_P)]
    elif c.material == MAT["person"]:
        rgb = rng.uniform(0.05, 0.6, 3)
    else:
        rgb = np.array([0.85, 0.35, 0.05])
    return {"cls": c.label, "size": _sample_size(rng, name), "material": c.material, "rgb": rgb, "s0": s0,
            "vs": vs, "amp": amp, "w": rng.uniform(0.1, 0.4), "ph": rng.uniform(0, 2 * np.pi), "d0": d0,
            "vd": vd, "dlo": dlo, "dhi": dhi, "yaw_off": yaw_off, "follows_ego": follows}


def _populate_actors(rng: np.random.Generator, sc: Scenario, road: Road, ego: EgoTrajectory,
                     duration_s: float) -> Actors:
    lay = road.layout
    rows: list[dict] = []
    s_ego0 = float(ego.centre_s(0.0))
    s_ego1 = float(ego.centre_s(duration_s))
    names = sorted(sc.class_mix)
    probs = np.array([sc.class_mix[k] for k in names])
    probs /= probs.sum()

    def vehicle() -> str:
        return names[rng.choice(len(names), p=probs)]

    # Ego lane: a lead vehicle and a follower keep their gap (no overtaking through us).
    rows.append(_row(rng, vehicle(), rng.uniform(18.0, 35.0), 0.0, lay.lane_centre(0, False), follows=True, amp=3.0))
    rows.append(_row(rng, "car", -rng.uniform(12.0, 20.0), 0.0, lay.lane_centre(0, False), follows=True, amp=2.0))
    vmax = sc.speed_range[1]
    for lane in range(lay.lanes_per_dir):
        for oncoming in (False, True):
            if lane == 0 and not oncoming:
                continue
            speed = rng.uniform(*sc.speed_range)
            sign = -1.0 if oncoming else 1.0
            lo = s_ego0 - 150.0 - (0 if oncoming else vmax * duration_s)
            hi = s_ego1 + 200.0 + (vmax * duration_s if oncoming else 0)
            s = lo + rng.uniform(0, sc.traffic_spacing[1])
            while s < hi:
                name = vehicle()
                yaw_off = np.pi if oncoming else 0.0
                rows.append(_row(rng, name, s, sign * speed, lay.lane_centre(lane, oncoming), yaw_off=yaw_off,
                                 amp=rng.uniform(0.0, 2.0)))
                s += rng.uniform(*sc.traffic_spacing) + 12.0
    region = (s_ego0 - 120.0, s_ego1 + 150.0)
    span = region[1] - region[0]
    side_d = lay.half_width + lay.sidewalk / 2
    # Pedestrians on the sidewalks: walking either way or standing.
    for _ in range(rng.poisson(sc.pedestrians_per_100m * span / 100.0)):
        side = rng.choice([-1.0, 1.0])
        speed = rng.choice([0.0, rng.uniform(1.0, 1.6)], p=[0.3, 0.7]) * rng.choice([-1.0, 1.0])
        d = side * (side_d + rng.uniform(-0.8, 0.8))
        rows.append(_row(rng, "pedestrian", rng.uniform(*region), speed, d,
                         yaw_off=(np.pi if speed < 0 else 0.0) + (rng.uniform(-3, 3) if speed == 0 else 0.0)))
    # Crossing pedestrians: cross ahead of the ego, finishing before it (and its lead car) arrive.
    width = 2 * lay.half_width + 2.0
    for _ in range(rng.poisson(sc.crossing_per_100m * span / 100.0)):
        t_c = rng.uniform(-2.0, duration_s)
        speed = rng.uniform(1.1, 1.6)
        t_end = t_c + width / speed + 1.5
        s_c = float(ego.centre_s(min(t_end, duration_s + 0.9))) + 50.0 + rng.uniform(0, 40.0)
        direction = rng.choice([-1.0, 1.0])
        start = -direction * width / 2
        rows.append(_row(rng, "pedestrian", s_c, 0.0, start - direction * speed * t_c, vd=direction * speed,
                         dlo=-width / 2, dhi=width / 2, yaw_off=direction * np.pi / 2))
    # Cyclists near the right edge of the outer lane, both directions.
    for _ in range(rng.poisson(sc.cyclists_per_100m * span / 100.0)):
        oncoming = bool(rng.random() < 0.5)
        speed = rng.uniform(3.5, 6.5)
        d = (lay.half_width - 0.35) * (1.0 if oncoming else -1.0)
        rows.append(_row(rng, "cyclist", rng.uniform(*region), -speed if oncoming else speed, d,
                         yaw_off=np.pi if oncoming else 0.0, amp=rng.uniform(0, 1.0)))
    # Barrier rows (road works) on the shoulder/sidewalk edge, static.
    for _ in range(rng.poisson(sc.barrier_rows_per_km * span / 1000.0)):
        s = rng.uniform(*region)
        side = rng.choice([-1.0, 1.0])
        for k in range(int(rng.integers(3, 8))):
            rows.append(_row(rng, "barrier", s + 2.7 * k, 0.0, side * (lay.half_width + 0.6), yaw_off=np.pi / 2))
    return _actors_from_rows(rows)


def _populate_static(rng: np.random.Generator, sc: Scenario, road: Road) -> StaticObjects:
    lay = road.layout
    cen: list[list[float]] = []
    size: list[list[float]] = []
    yaw: list[float] = []
    mat: list[int] = []
    prism: list[bool] = []

    def add(s: float, d: float, z: float, l: float, w: float, h: float, m: int, is_prism: bool, dyaw: float = 0.0):
        x, y, hd = road.point(np.array([s]), np.array([d]))
        cen.append([float(x[0]), float(y[0]), z + h / 2])
        size.append([l, w, h])
        yaw.append(float(hd[0]) + dyaw)
        mat.append(m)
        prism.append(is_prism)

    L = road.length
    edge = lay.half_width + lay.sidewalk
    for side in (-1.0, 1.0):
        # Street lights / sign poles.
        s = rng.uniform(0, 30)
        while s < L:
            add(s, side * (edge - 0.4 if sc.urban else edge + 1.0), 0.0, 0.3, 0.3, rng.uniform(6.0, 9.0),
                MAT["metal_pole"], True)
            s += rng.uniform(25.0, 40.0) if sc.urban else rng.uniform(60.0, 120.0)
        # Trees: trunk prism + canopy box.
        s = rng.uniform(0, 15)
        while s < L:
            d = side * (edge + rng.uniform(1.0, 3.0) if sc.urban else edge + rng.uniform(6.0, 20.0))
            trunk_h = rng.uniform(2.0, 3.5)
            add(s, d, 0.0, 0.45, 0.45, trunk_h, MAT["bark"], True)
            c = rng.uniform(2.5, 5.0)
            add(s, d, trunk_h, c, c, rng.uniform(2.0, 4.5), MAT["foliage"], False, rng.uniform(0, np.pi))
            s += rng.uniform(8.0, 25.0) if sc.urban else rng.uniform(20.0, 60.0)
        if sc.urban:
            # Building frontage with gaps (short boxes so curves do not push them into the street).
            s = rng.uniform(0, 10)
            while s < L:
                length = rng.uniform(8.0, 15.0)
                depth = rng.uniform(8.0, 14.0)
                add(s + length / 2, side * (edge + rng.uniform(5.0, 9.0) + depth / 2), 0.0, length, depth,
                    rng.uniform(6.0, 20.0), MAT["concrete"], False)
                s += length + rng.uniform(1.0, 8.0)
        else:
            # Guardrail (beam on posts: a box 0.45-0.75 m above ground) in 4 m segments; noise walls in stretches.
            for s in np.arange(0.0, L, 4.0):
                add(s + 2.0, side * (edge + 0.5), 0.45, 4.0, 0.25, 0.3, MAT["guardrail"], False)
            s = rng.uniform(50, 300)
            while s < L:
                run = rng.uniform(100, 300)
                for s2 in np.arange(s, min(s + run, L), 6.0):
                    add(s2 + 3.0, side * (edge + 5.0), 0.0, 6.0, 0.3, 4.0, MAT["concrete"], False)
                s += run + rng.uniform(200, 500)
    if not sc.urban:
        # Concrete median wall between carriageways.
        for s in np.arange(0.0, L, 4.0):
            add(s + 2.0, 0.0, 0.0, 4.0, 0.5, 0.8, MAT["concrete"], False)
    return StaticObjects(np.array(cen), np.array(size), np.array(yaw), np.array(mat, np.int16),
                         np.array(prism, bool))
