"""Automotive radar (ARS 408-like): sparse detections with Doppler and RCS.

Per scan at capture time t:
- each actor inside range and FOV gets 1..N detections (N by class/size),
  placed where rays from the radar to points on the actor actually hit it
  (occlusion from the same ray casting), each kept with a probability that
  falls off with SNR ∝ RCS / r⁴ (radar equation);
- static clutter: returns from poles, walls, guardrails, trees in view;
- multipath ghosts: the radar–target–bumper–target double bounce appears at
  twice the range with twice the Doppler (well known in automotive radar);
- noise in range, azimuth and Doppler from the rig spec; Swerling-1 RCS
  fluctuation (exponential in linear scale).
The ARS 408 has no elevation measurement: z is reported as 0 in the radar
frame. v_r is the raw range rate relative to the moving sensor (negative =
approaching), not ego-compensated. Beyond 70 m only the far beam (±9°) sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.rig import SensorSpec
from ..core.types import PointCloud
from .catalog import CLASSES, CLUTTER_RCS
from .world import World

RADAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("rcs", "<f4")])
_CLASS_BY_LABEL = {c.label: c for c in CLASSES.values()}
NEAR_RANGE_M = 70.0  # ARS 408 near scan range; far scan ±9°
FAR_HALF_FOV = np.deg2rad(9.0)


@dataclass
class RadarModel:
    half_fov: float
    max_range: float
    range_noise: float
    az_noise: float
    doppler_noise: float
    p_detect: float
    clutter: int
    ghost_p: float

    @staticmethod
    def from_spec(spec: SensorSpec) -> RadarModel:
        m = spec.model
        return RadarModel(np.deg2rad(float(m.get("fov_deg", 120.0))) / 2, float(m.get("max_range_m", 120.0)),
                          float(m.get("range_noise_m", 0.25)), np.deg2rad(float(m.get("azimuth_noise_deg", 0.5))),
                          float(m.get("doppler_noise_mps", 0.1)), float(m.get("detection_probability", 0.85)),
                          int(m.get("clutter_per_scan", 6)), float(m.get("ghost_probability", 0.05)))


def _in_fov(m: RadarModel, r: np.ndarray, az: np.ndarray) -> np.ndarray:
    near = (r <= NEAR_RANGE_M) & (np.abs(az) <= m.half_fov)
    far = (r <= m.max_range) & (np.abs(az) <= FAR_HALF_FOV)
    return near | far


def radar_scan(world: World, spec: SensorSpec, t: float, rng: np.random.Generator,
               noise_scale: float = 1.0, stamp_ns: int = 0, actor_returns: np.ndarray | None = None) -> PointCloud:
    """One scan at sim time `t`; `actor_returns`, when given, counts detections per actor (see lidar_sweep)."""
    m = RadarModel.from_spec(spec)
    T = world.ego.world_from_sensor(t, spec.extrinsic)[0]
    R, o = T[:3, :3], T[:3, 3]
    v_ego, _, w_ego = world.ego.kinematics(t)
    _, _, yaw = world.ego.pose(t)
    fwd = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    # Sensor velocity in the world = base velocity + ω × lever arm.
    lever = T[:3, 3] - world.ego.world_from_base(t)[0][:3, 3]
    v_sensor = v_ego * fwd + np.cross([0.0, 0.0, w_ego], lever)
    st = world.actor_state(t)
    rel = (st.centre - o) @ R  # actor centres in the radar frame
    rng_c = np.linalg.norm(rel[:, :2], axis=1)
    az_c = np.arctan2(rel[:, 1], rel[:, 0])
    cand = np.flatnonzero(_in_fov(m, rng_c, az_c) & (rng_c > 0.5))
    origins, dirs, owner = [], [], []
    sizes = world.actors.size
    for a in cand:  # a handful of rays per actor at points spread over its box
        k = 6
        c, s = np.cos(st.yaw[a]), np.sin(st.yaw[a])
        local = (rng.uniform(-0.45, 0.45, (k, 3)) * sizes[a])
        local[:, 2] = rng.uniform(-0.3, 0.2, k) * sizes[a, 2]
        tgt = st.centre[a] + np.c_[c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]]
        d = tgt - o
        dirs.append(d / np.linalg.norm(d, axis=1, keepdims=True))
        origins.append(np.broadcast_to(o, d.shape))
        owner.append(np.full(k, a))
    pts: list[np.ndarray] = []
    vr: list[np.ndarray] = []
    rcs: list[np.ndarray] = []
    if cand.size:
        D = np.concatenate(dirs)
        O = np.concatenate(origins)
        own = np.concatenate(owner)
        h = world.cast(O, D, t, near_xy=o[:2])
        for a in cand:
            mine = np.flatnonzero((own == a) & h.dynamic & (h.obj == a))
            if mine.size == 0:
                continue  # fully occluded
            cm = _CLASS_BY_LABEL[int(world.actors.cls[a])]
            n = min(int(rng.integers(cm.radar_points[0], cm.radar_points[1] + 1)), mine.size)
            pick = rng.choice(mine, n, replace=False)
            r = h.t[pick]
            # Radar equation: SNR ∝ σ/r⁴; p_detect from the spec holds for a car at 50 m, falls off beyond.
            snr_rel = 10 ** (cm.rcs_dbsm / 10) / 10.0 * (50.0 / np.maximum(r, 1.0)) ** 4
            p = m.p_detect * np.clip(snr_rel, 0.0, 1.0) ** 0.25
            ok = rng.random(n) < p
            if not ok.any():
                continue
            pick, r = pick[ok], r[ok]
            if actor_returns is not None:
                actor_returns[a] += len(pick)
            pw = O[pick] + D[pick] * r[:, None]
            v_t = np.c_[st.vel[a][None].repeat(len(pick), 0), np.zeros(len(pick))]
            vr.append(np.einsum("ij,ij->i", v_t - v_sensor, D[pick]))
            pts.append(pw)
            rcs.append(cm.rcs_dbsm + 10 * np.log10(rng.exponential(1.0, len(pick)) + 1e-3))
    # Static clutter: returns from static structures in view.
    st_obj = world.static
    if m.clutter > 0 and len(st_obj.centre):
        relc = (st_obj.centre - o) @ R
        rc = np.linalg.norm(relc[:, :2], axis=1)
        azc = np.arctan2(relc[:, 1], relc[:, 0])
        vis = np.flatnonzero(_in_fov(m, rc, azc) & (rc > 1.0))
        if vis.size:
            pick = rng.choice(vis, min(m.clutter, vis.size), replace=False)
            tgt = st_obj.centre[pick].copy()
            tgt[:, 2] = np.minimum(tgt[:, 2], 0.6)
            d = tgt - o
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            h = world.cast(np.broadcast_to(o, d.shape), d, t, near_xy=o[:2])
            good = np.isfinite(h.t) & (h.obj >= 0) & ~h.dynamic
            if good.any():
                pw = o + d[good] * h.t[good, None]
                pts.append(pw)
                vr.append(-(d[good] @ v_sensor))
                rcs.append(CLUTTER_RCS[h.material[good]] + 10 * np.log10(rng.exponential(1.0, int(good.sum())) + 1e-3))
    if pts:
        P = np.concatenate(pts)
        V = np.concatenate(vr)
        S = np.concatenate(rcs)
    else:
        P, V, S = np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    # Into the radar frame, as (range, azimuth) measurements.
    rel = (P - o) @ R
    r = np.linalg.norm(rel[:, :2], axis=1)
    az = np.arctan2(rel[:, 1], rel[:, 0])
    # Multipath ghosts: double bounce at 2r with 2 v_r.
    g = rng.random(len(r)) < m.ghost_p
    r = np.concatenate([r, 2 * r[g]])
    az = np.concatenate([az, az[g]])
    V = np.concatenate([V, 2 * V[g]])
    S = np.concatenate([S, S[g] - 10.0])
    n = len(r)
    r = r + rng.normal(0, m.range_noise * noise_scale, n)
    az = az + rng.normal(0, m.az_noise * noise_scale, n)
    V = V + rng.normal(0, m.doppler_noise * noise_scale, n)
    keep = _in_fov(m, r, az) & (r > 0.2)
    out = np.empty(int(keep.sum()), RADAR_DTYPE)
    out["x"] = (r * np.cos(az))[keep]
    out["y"] = (r * np.sin(az))[keep]
    out["z"] = 0.0
    out["v_r"] = V[keep]
    out["rcs"] = S[keep]
    return PointCloud(stamp_ns=stamp_ns, frame_id=spec.frame_id, points=out, height=1, is_dense=True)
