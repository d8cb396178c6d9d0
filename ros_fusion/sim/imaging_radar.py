"""4D imaging radar (Astyx 6455 HiRes-like): dense detections with elevation, Doppler and magnitude.

An imaging radar resolves range, azimuth *and elevation* with a large virtual MIMO array, so it
reports hundreds to thousands of detections per scan where a conventional automotive radar
(`sim.radar`, ARS 408-like) reports a few per object and no height. The Astyx HiRes2019 dataset
(Meyer & Kuschk, "Automotive Radar Dataset for Deep Learning Based 3D Object Detection", EuRAD 2019)
records such a sensor; the rig's `model` block holds its parameters.

Model, per scan at capture time t:
- one ray per angular resolution cell (`azimuth_resolution_deg` × `elevation_resolution_deg`,
  jittered inside the cell) over the field of view, cast into the world from the sensor pose: a
  detection is at most one per cell, the strongest scatterer the cell sees, so an object's number of
  detections falls with the solid angle it covers (~1/r²), as on the real sensor;
- each hit is detected with the Swerling-1 probability P_d = P_fa^(1/(1+SNR)) (a fluctuating target
  against a CFAR threshold of false-alarm probability `false_alarm_probability`; Skolnik, "Introduction
  to Radar Systems", ch. 2), SNR ∝ G(el)²·σ/r⁴ by the radar equation (G the one-way power gain of a
  Gaussian beam of full width `elevation_beamwidth_deg` at -3 dB), anchored so that a car (10 dBsm) on
  boresight at `reference_range_m` has P_d = `detection_probability`. Static structures have their
  material's RCS (`sim.catalog`); a resolution cell of road has `road_rcs_dbsm` (asphalt's backscatter
  coefficient at grazing incidence is about -30 dB at 77 GHz, times a cell of ~0.1 m²);
- noise in range, azimuth, elevation and Doppler; Swerling-1 fluctuation of the reflected power;
- v_r is the raw range rate relative to the moving sensor (negative = approaching), folded into the
  rig's `velocity_interval_mps` when the rig gives one (a radar's unambiguous Doppler interval);
- `report_rcs: false` writes rcs = 0 dBsm for every detection, as `convert astyx` does for a sensor
  whose magnitude is uncalibrated, so a simulated and a converted scan carry the same fields.

What it leaves out: range/Doppler sidelobes, multipath ghosts, several detections of one object in one
angular cell at different ranges (the coarse elevation cell stands in for them). The defaults are the
Astyx 6455 as its dataset's training frames 000000-000339 show it (no public datasheet): field of view
±60° × ±14° and detections to ~100 m (1st/99th percentiles), ~2000 detections per scan of which ~10 %
on labelled objects and ~10 % on the road, a car ~50 detections at 10-20 m, ~34 at 20-30 m, ~14 at
30-50 m and ~8 at 50-80 m; the simulated urban drive gives ~1800 per scan, ~6 % on the road, a car
~32 at 20-30 m and ~10 at 30-50 m.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.doppler_ego import fold
from ..core.rig import SensorSpec
from ..core.types import PointCloud
from .catalog import CLASSES, CLUTTER_RCS
from .world import World

IMAGING_RADAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("v_r", "<f4"), ("rcs", "<f4")])
_RCS_BY_LABEL = {c.label: c.rcs_dbsm for c in CLASSES.values()}
#: RCS [dBsm] of the reference target for which `detection_probability` holds at `reference_range_m`.
_REFERENCE_RCS_DBSM = 10.0


@dataclass(frozen=True)
class ImagingRadarModel:
    azimuth_fov_deg: float
    elevation_fov_deg: float
    azimuth_resolution_deg: float
    elevation_resolution_deg: float
    elevation_beamwidth_deg: float
    min_range_m: float
    max_range_m: float
    reference_range_m: float
    detection_probability: float
    false_alarm_probability: float
    road_rcs_dbsm: float
    range_noise_m: float
    azimuth_noise_deg: float
    elevation_noise_deg: float
    doppler_noise_mps: float
    report_rcs: bool

    @staticmethod
    def from_spec(spec: SensorSpec) -> ImagingRadarModel:
        m = spec.model
        return ImagingRadarModel(
            float(m.get("fov_deg", 120.0)), float(m.get("elevation_fov_deg", 28.0)),
            float(m.get("azimuth_resolution_deg", 0.5)), float(m.get("elevation_resolution_deg", 2.0)),
            float(m.get("elevation_beamwidth_deg", 20.0)),
            float(m.get("min_range_m", 1.0)), float(m.get("max_range_m", 100.0)),
            float(m.get("reference_range_m", 80.0)), float(m.get("detection_probability", 0.8)),
            float(m.get("false_alarm_probability", 1e-4)), float(m.get("road_rcs_dbsm", -40.0)),
            float(m.get("range_noise_m", 0.1)),
            float(m.get("azimuth_noise_deg", 0.3)), float(m.get("elevation_noise_deg", 0.5)),
            float(m.get("doppler_noise_mps", 0.08)), bool(m.get("report_rcs", True)))


def is_imaging_radar(spec: SensorSpec) -> bool:
    """A radar whose `model` block gives an elevation field of view is simulated as an imaging radar."""
    return "elevation_fov_deg" in spec.model


def imaging_radar_scan(world: World, spec: SensorSpec, t: float, rng: np.random.Generator,
                       noise_scale: float = 1.0, stamp_ns: int = 0,
                       actor_returns: np.ndarray | None = None) -> PointCloud:
    """One scan at sim time `t` in the radar frame; `actor_returns` counts detections per actor."""
    m = ImagingRadarModel.from_spec(spec)
    T = world.ego.world_from_sensor(t, spec.extrinsic)[0]
    R, o = T[:3, :3], T[:3, 3]
    v_ego, _, w_ego = world.ego.kinematics(t)
    _, _, yaw = world.ego.pose(t)
    lever = o - world.ego.world_from_base(t)[0][:3, 3]
    v_sensor = v_ego * np.array([np.cos(yaw), np.sin(yaw), 0.0]) + np.cross([0.0, 0.0, w_ego], lever)

    n_az = max(1, int(round(m.azimuth_fov_deg / m.azimuth_resolution_deg)))
    n_el = max(1, int(round(m.elevation_fov_deg / m.elevation_resolution_deg)))
    az_c = np.deg2rad((np.arange(n_az) + 0.5) * m.azimuth_resolution_deg - m.azimuth_fov_deg / 2)
    el_c = np.deg2rad((np.arange(n_el) + 0.5) * m.elevation_resolution_deg - m.elevation_fov_deg / 2)
    az, el = (a.ravel() for a in np.meshgrid(az_c, el_c, indexing="ij"))
    az = az + rng.uniform(-0.5, 0.5, az.size) * np.deg2rad(m.azimuth_resolution_deg)
    el = el + rng.uniform(-0.5, 0.5, el.size) * np.deg2rad(m.elevation_resolution_deg)
    local = np.c_[np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]
    dirs = local @ R.T
    h = world.cast(np.broadcast_to(o, dirs.shape), dirs, t, near_xy=o[:2])
    r = h.t
    hit = np.isfinite(r) & (r >= m.min_range_m) & (r <= m.max_range_m)
    actor = hit & h.dynamic & (h.obj >= 0)
    rcs = np.full(r.size, m.road_rcs_dbsm)
    static = hit & ~h.dynamic & (h.obj >= 0)
    rcs[static] = CLUTTER_RCS[h.material[static]]
    if actor.any():
        labels = world.actors.cls[h.obj[actor]]
        rcs[actor] = [_RCS_BY_LABEL[int(c)] for c in labels]
    # Radar equation, anchored at the reference target; Swerling-1 detection against the CFAR threshold.
    gain = np.exp(-4.0 * np.log(2.0) * (el / np.deg2rad(m.elevation_beamwidth_deg)) ** 2)  # one-way, Gaussian beam
    log_pfa = np.log(m.false_alarm_probability)
    snr_ref = log_pfa / np.log(m.detection_probability) - 1.0
    snr = (snr_ref * gain ** 2 * 10 ** ((rcs - _REFERENCE_RCS_DBSM) / 10)
           * (m.reference_range_m / np.maximum(r, 1.0)) ** 4)
    with np.errstate(invalid="ignore"):
        p = np.where(hit, np.exp(log_pfa / (1.0 + snr)), 0.0)
    det = np.flatnonzero(hit & (rng.random(r.size) < p))
    if actor_returns is not None and det.size:
        own = det[actor[det]]
        np.add.at(actor_returns, h.obj[own], 1)

    # Velocity of what each detection hit: actors move, everything else is static.
    v_tgt = np.zeros((det.size, 3))
    on_actor = actor[det]
    if on_actor.any():
        st = world.actor_state(t)
        v_tgt[on_actor, :2] = st.vel[h.obj[det[on_actor]]]
    d = dirs[det]
    n = det.size
    vr = np.einsum("ij,ij->i", v_tgt - v_sensor, d) + rng.normal(0, m.doppler_noise_mps * noise_scale, n)
    rr = r[det] + rng.normal(0, m.range_noise_m * noise_scale, n)
    # The measured angles: where the scatterer was, plus noise (not the cell centre: the radar
    # interpolates its angle estimate within the beam).
    lp = d @ R
    a_meas = np.arctan2(lp[:, 1], lp[:, 0]) + rng.normal(0, np.deg2rad(m.azimuth_noise_deg) * noise_scale, n)
    e_meas = np.arcsin(np.clip(lp[:, 2], -1.0, 1.0)) + rng.normal(
        0, np.deg2rad(m.elevation_noise_deg) * noise_scale, n)
    out = np.empty(n, IMAGING_RADAR_DTYPE)
    out["x"] = rr * np.cos(e_meas) * np.cos(a_meas)
    out["y"] = rr * np.cos(e_meas) * np.sin(a_meas)
    out["z"] = rr * np.sin(e_meas)
    out["v_r"] = fold(vr, spec.velocity_interval_mps)
    if m.report_rcs:
        out["rcs"] = rcs[det] + 10 * np.log10(rng.exponential(1.0, n) + 1e-3)  # Swerling 1
    else:
        out["rcs"] = 0.0
    return PointCloud(stamp_ns=stamp_ns, frame_id=spec.frame_id, points=out, height=1, is_dense=True)
