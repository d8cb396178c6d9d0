"""Rotating multi-beam LiDAR (HDL-32E-like, parameters from the rig `model` block).

Each azimuth column fires at its own time within the sweep, from the sensor
pose at that time, and sees actors where they were in that sector (the sweep
is cast in `CHUNKS` azimuth sectors). As a real driver does, every point is
reported in the sensor frame *at its own firing time*; the header stamp is the
last firing and `t` (≤ 0) is each point's time relative to it, so a consumer
deskews with its ego-motion (docs/DESIGN.md §4/§6). That is the motion distortion a
rotating sensor on a moving car really has.

Detection: received power ∝ ρ·cosθ / r² (diffuse Lambertian target); the link
budget is anchored so a 20 % reflective target is detected to `max_range_m`,
the way LiDAR datasheets quote range. Rain (night_rain): two-way extinction
exp(−2αr) with α from the Koschmieder relation α ≈ 3/V and visibility V ≈ 1 km
in heavy rain, extra range jitter σ = 0.02·(1 − e^{−R})² m for rain rate R mm/h
(form of Goodin et al., "Predicting the influence of rain on LIDAR in ADAS",
Electronics 2019), and a few near-range returns from drops, as reported by
Filgueira et al., "Quantifying the influence of rain in LiDAR performance",
Measurement 2017.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.rig import SensorSpec
from ..core.types import PointCloud
from .catalog import REFLECTIVITY
from .world import World

CHUNKS = 10
LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("t", "<f4"),
                        ("ring", "<u2")])


@dataclass
class LidarModel:
    beams: int
    vfov: tuple[float, float]  # degrees
    az_res_deg: float
    min_range: float
    max_range: float
    range_noise: float
    dropout: float
    clockwise: bool
    #: Intensity reported for a 100 % diffuse reflector at normal incidence: 255 for a driver that spans
    #: its byte with diffuse targets, 100 for Velodyne's calibrated reflectivity (VLP-16 user manual
    #: 63-9243: 0-100 diffuse reflectance in %, 101-255 retroreflectors).
    reflectivity_full_scale: float = 255.0

    @staticmethod
    def from_spec(spec: SensorSpec) -> LidarModel:
        m = spec.model
        v = m.get("vertical_fov_deg", [-30.67, 10.67])
        return LidarModel(int(m.get("beams", 32)), (float(v[0]), float(v[1])),
                          float(m.get("azimuth_resolution_deg", 0.4)), float(m.get("min_range_m", 1.0)),
                          float(m.get("max_range_m", 100.0)), float(m.get("range_noise_m", 0.02)),
                          float(m.get("dropout", 0.03)), bool(m.get("clockwise", True)),
                          float(m.get("reflectivity_full_scale", 255.0)))

    @property
    def columns(self) -> int:
        return int(round(360.0 / self.az_res_deg))


def lidar_sweep(world: World, spec: SensorSpec, t_end: float, rng: np.random.Generator,
                noise_scale: float = 1.0, stamp_ns: int = 0, actor_returns: np.ndarray | None = None) -> PointCloud:
    """One sweep ending at sim time `t_end` [s] (the header stamp).

    `actor_returns` (one int per actor), when given, is incremented by each actor's
    returns in this sweep: ground truth's `num_points`, so evaluation can leave out
    objects no sensor saw (rain backscatter is not counted).
    """
    m = LidarModel.from_spec(spec)
    period = spec.period_s
    ncol, nb = m.columns, m.beams
    frac = (np.arange(ncol) + 1.0) / ncol
    t_col = t_end - period + frac * period  # last column fires at t_end
    # Sweep starts behind the car so the seam is at the rear (as mounted on most cars).
    sgn = -1.0 if m.clockwise else 1.0
    az = np.pi + sgn * 2 * np.pi * frac
    el = np.deg2rad(np.linspace(m.vfov[0], m.vfov[1], nb))
    ce = np.cos(el)
    d_s = np.empty((ncol, nb, 3))
    d_s[..., 0] = np.cos(az)[:, None] * ce[None]
    d_s[..., 1] = np.sin(az)[:, None] * ce[None]
    d_s[..., 2] = np.sin(el)[None]
    T = world.ego.world_from_sensor(t_col, spec.extrinsic)  # (ncol,4,4)
    d_w = np.einsum("cij,cbj->cbi", T[:, :3, :3], d_s).reshape(-1, 3)
    o_w = np.repeat(T[:, :3, 3], nb, axis=0)
    step = int(np.ceil(ncol / CHUNKS))
    chunks = [(slice(k * step * nb, min((k + 1) * step, ncol) * nb), float(t_col[min(k * step + step // 2, ncol - 1)]))
              for k in range(CHUNKS) if k * step < ncol]
    hits = world.cast(o_w, d_w, t_end, near_xy=T[-1, :2, 3], chunks=chunks)
    r = hits.t
    valid = np.isfinite(r) & (r >= m.min_range)
    mat = np.clip(hits.material, 0, None)
    rho = REFLECTIVITY[mat]
    cos_inc = np.abs(np.einsum("ij,ij->i", hits.normal, d_w))
    # Lane markings are retroreflective paint: much brighter than asphalt.
    if valid.any():
        road = valid & (hits.road_seg >= 0)
        if road.any():
            p = o_w[road] + d_w[road] * r[road, None]
            s, dd = world.road_sd(p, hits.road_seg[road])
            rho[road] = np.where(lane_marking_mask(world, s, dd), 0.6, rho[road])
    power = rho * np.maximum(cos_inc, 0.05) / np.maximum(r, 0.1) ** 2
    power_min = 0.2 / m.max_range**2
    sc = world.scenario
    sigma = np.full(len(r), m.range_noise * noise_scale)
    keep_p = np.full(len(r), 1.0 - m.dropout)
    if sc.rain_mm_h > 0:
        alpha = 3.0 / 1000.0  # [1/m], heavy rain visibility ~1 km
        power = power * np.exp(-2 * alpha * np.nan_to_num(r, posinf=0.0))
        sigma = sigma + 0.02 * (1 - np.exp(-sc.rain_mm_h)) ** 2 * noise_scale
        keep_p = keep_p * 0.9  # drops on the window scatter ~10 % of shots (Filgueira 2017 saw large losses)
    valid &= power >= power_min
    valid &= rng.random(len(r)) < keep_p
    r_meas = r + rng.normal(0.0, 1.0, len(r)) * sigma
    valid &= (r_meas <= m.max_range) & (r_meas >= m.min_range)
    if actor_returns is not None:
        on_actor = valid & hits.dynamic & (hits.obj >= 0)
        np.add.at(actor_returns, hits.obj[on_actor], 1)
    ring = np.tile(np.arange(nb, dtype=np.uint16), ncol)
    tt = np.repeat(t_col - t_end, nb)
    d_sf = d_s.reshape(-1, 3)
    # Intensity: calibrated-reflectivity style from ρ·cosθ on the sensor's scale, 2 % multiplicative noise.
    inten = np.clip(m.reflectivity_full_scale * rho * cos_inc * (1 + 0.02 * rng.normal(size=len(r))), 0, 255)
    if sc.rain_mm_h > 0:
        inten = inten * np.exp(-2 * 3.0e-3 * np.nan_to_num(r, posinf=0.0))
        # Backscatter returns from raindrops 1-4 m from the sensor, a few per sweep per beam set.
        n_drop = rng.poisson(0.002 * sc.rain_mm_h * len(r) / 25.0)
        idx = rng.choice(len(r), n_drop, replace=False)
        valid[idx] = True
        r_meas[idx] = rng.uniform(m.min_range, 4.0, n_drop)
        inten[idx] = rng.uniform(0, 10, n_drop)
    sel = np.flatnonzero(valid)
    out = np.empty(len(sel), LIDAR_DTYPE)
    p = d_sf[sel] * r_meas[sel, None]
    out["x"], out["y"], out["z"] = p[:, 0], p[:, 1], p[:, 2]
    out["intensity"] = inten[sel]
    out["t"] = tt[sel]
    out["ring"] = ring[sel]
    return PointCloud(stamp_ns=stamp_ns, frame_id=spec.frame_id, points=out, height=1, is_dense=True)


def lane_marking_mask(world: World, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Painted lines: solid edge lines, dashed lane dividers (3 m line, 6 m gap), 15 cm wide."""
    lay = world.road.layout
    half = lay.half_width
    edge = np.abs(np.abs(d) - (half - 0.2)) < 0.075
    mark = edge
    for k in range(lay.lanes_per_dir):
        c = k * lay.lane_width
        line = np.abs(np.abs(d) - c) < 0.075
        if k == 0 and lay.lanes_per_dir > 1:
            mark = mark | line  # solid centre line between carriageways
        else:
            mark = mark | (line & (np.mod(s, 9.0) < 3.0))
    return mark
