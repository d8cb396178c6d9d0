"""FusionPipeline + FusionEngine on simulated drives: modes, fallback, determinism, bad input (docs/DESIGN.md §8).

The drives come straight from the simulator's event stream (topic, publish
time, payload) — what a bag replay would deliver — and go through the same
engine the node runs, with the shipped model on ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest

from ros_fusion.core.bev import normalised_intensity
from ros_fusion.core.events import SIM_EPOCH_NS
from ros_fusion.core.rig import load_rig
from ros_fusion.core.types import NS_PER_S, PointCloud
from ros_fusion.eval.bag_eval import (
    BagEvalConfig,
    DropSpec,
    collect_metrics,
    evaluate_bag,
    max_output_gap_s,
    parse_drop,
)
from ros_fusion.eval.report import metrics_to_json
from ros_fusion.paths import default_rig_path, share_dir
from ros_fusion.runtime.engine import EngineSettings
from ros_fusion.runtime.pipeline import FusionPipeline, ModePolicy, PipelineConfig, pattern_key
from ros_fusion.sim.drive import simulate_drive

pytest.importorskip("onnxruntime")


@cache
def _model():
    from ros_fusion.runtime.backends import create_backend
    from ros_fusion.runtime.model_bundle import load_bundle

    model = load_bundle(share_dir() / "models")
    return model, create_backend("onnxruntime", model, providers=["CPUExecutionProvider"], threads=2)


@cache
def _rig():
    return load_rig(default_rig_path())


@cache
def _events(scenario: str, seed: int, duration: float) -> tuple:
    return tuple((e.topic, e.publish_ns, e.payload) for e in simulate_drive(_rig(), scenario, seed, duration))


def _pipeline(**overrides) -> FusionPipeline:
    model, backend = _model()
    return FusionPipeline(_rig(), model, backend, PipelineConfig.from_manifest(model.raw, **overrides))


def _run(events, *, drops=(), robustness=False, **overrides):
    cfg = BagEvalConfig(drops=list(drops), robustness=robustness, settings=EngineSettings())
    return evaluate_bag(iter(events), _rig(), _pipeline(**overrides), cfg, name="t", start_ns=SIM_EPOCH_NS)


def test_pattern_key_and_policy_decisions() -> None:
    assert pattern_key(["radar", "lidar"]) == "lidar+radar"
    assert pattern_key([]) == "none"
    pol = ModePolicy(PipelineConfig(policy={"lidar+radar": "late"}))
    assert pol.decide(frozenset(), False) == ("none", "no usable modality")
    assert pol.decide(frozenset({"camera"}), False)[0] == "degraded"
    assert pol.decide(frozenset({"camera", "lidar", "radar"}), False)[0] == "intermediate"
    assert pol.decide(frozenset({"lidar", "radar"}), False)[0] == "late"
    assert pol.decide(frozenset({"camera", "lidar", "radar"}), True)[0] == "late"  # out of sync
    assert pol.decide(frozenset({"lidar", "radar"}), False, "intermediate")[0] == "intermediate"


def test_config_rejects_bad_values() -> None:
    from ros_fusion.core.rig import ConfigError

    with pytest.raises(ConfigError, match="strategy"):
        PipelineConfig.from_manifest({}, strategy="fastest")
    with pytest.raises(ConfigError, match="fusion.policy"):
        PipelineConfig.from_manifest({"fusion": {"policy": {"lidar+radar": "best"}}})
    with pytest.raises(ConfigError, match="calibration"):
        PipelineConfig.from_manifest({"fusion": {"calibration": {"sonar": {"a": 1.0, "b": 0.0}}}})


def test_intermediate_run_detects_and_attributes() -> None:
    run = _run(_events("urban", 7, 3.0))
    fused = [r for r in run.records if r.pred is not None]
    assert len(fused) >= 25  # 10 Hz LiDAR over 3 s, minus start-up
    # All sensors fresh → intermediate; the last bundle is the watchdog's after the drive (and its LiDAR) ended.
    assert all(r.mode == "intermediate" for r in fused[3:] if r.drive_s < 2.95)
    dets = [r.pred for r in fused if len(r.pred)]
    assert dets, "the shipped model detects nothing on an urban drive"
    sums = np.concatenate([obs.weights.sum(axis=1) for obs in dets])
    assert all(np.all(obs.weights >= 0) and obs.frame_id == "base_link" for obs in dets)
    # Gate weights at each peak: a softmax over the modalities covering it (sum 1), or none covers it (sum 0:
    # e.g. spurious low-score peaks on the ego vehicle itself, which no sensor sees).
    assert np.all((np.abs(sums - 1.0) < 1e-3) | (sums == 0.0))
    assert np.mean(np.abs(sums - 1.0) < 1e-3) > 0.9
    # the last intermediate bundle that still had the LiDAR (after the drive only camera/radar are left)
    timings = [r for r in fused if r.mode == "intermediate" and r.drive_s < 2.95][-1].timings_ms
    for stage in ("compensate", "preprocess", "encode.camera", "encode.radar", "fusion_head", "decode", "total"):
        assert stage in timings and timings[stage] >= 0.0
    assert "prefetched.lidar" in timings or "encode.lidar" in timings  # pipelined on arrival, or in the bundle


def test_offline_evaluation_is_deterministic() -> None:
    ev = _events("highway", 3, 2.0)
    a, b = _run(ev), _run(ev)
    assert len(a.records) == len(b.records)
    for ra, rb in zip(a.records, b.records, strict=True):
        assert ra.t_ns == rb.t_ns and ra.mode == rb.mode
        np.testing.assert_array_equal(ra.pred.boxes, rb.pred.boxes)
        np.testing.assert_array_equal(ra.pred.scores, rb.pred.scores)
    cfg = BagEvalConfig(robustness=False)
    ma, mb = collect_metrics([a], cfg), collect_metrics([b], cfg)
    ma.pop("latency_ms"), mb.pop("latency_ms")  # wall-clock timings differ run to run; the numbers must not
    assert metrics_to_json(ma) == metrics_to_json(mb)
    assert np.isfinite(ma["summary"]["mAP"])


def test_camera_drop_switches_to_late_and_back_within_hysteresis() -> None:
    ev = _events("urban", 5, 4.0)
    run = _run(ev, drops=[DropSpec(("camera_front",), 1.5, 2.5)], policy={"lidar+radar": "late"})
    period = 0.1
    during = [r for r in run.records if 1.5 + period < r.drive_s < 2.5]
    assert during and all(r.mode == "late" for r in during)
    assert all("camera" not in r.modalities for r in during)
    first_late = next(s for s in run.switches if s["to"] == "late")
    assert 1.5 <= first_late["t_s"] <= 1.5 + 2 * period  # the first bundle or two without a camera
    back = next(s for s in run.switches if s["to"] == "intermediate" and s["t_s"] >= 2.5)
    # Recovery waits for `recover_count` healthy camera frames (15 Hz) after it returns, plus one bundle.
    assert back["t_s"] - 2.5 <= 3 / 15 + 2 * period
    assert max_output_gap_s(run) <= period * 1.05  # detections never pause
    late = [r.pred for r in during if r.pred is not None and len(r.pred)]
    assert late, "late fusion produced nothing while the camera was out"
    for obs in late:
        assert np.allclose(obs.weights.sum(axis=1), 1.0, atol=1e-3)
        assert np.all(obs.weights[:, 0] == 0.0)  # no camera contribution without a camera


def test_lidar_drop_keeps_outputs_via_watchdog() -> None:
    ev = _events("urban", 6, 4.0)
    run = _run(ev, drops=[DropSpec(("lidar_top",), 1.0, 3.0)])
    during = [r for r in run.records if 1.0 + 0.35 < r.drive_s < 3.0]
    assert during and all("lidar" not in r.modalities for r in during)
    assert all(r.mode in ("intermediate", "late") for r in during)  # camera + radar still fused
    # The watchdog keeps the reference rate while the LiDAR is silent (within one period after its timeout).
    assert max_output_gap_s(run) <= 0.1 * 3 + 0.1 + 0.01
    scored = [r for r in during if r.gt is not None]
    assert scored, "watchdog bundles were not matched to ground truth"


def test_frozen_lidar_is_excluded() -> None:
    ev = list(_events("highway", 4, 3.0))
    lidar_topic = _rig().sensors["lidar_top"].topic
    frozen = None
    out = []
    for topic, t, p in ev:
        if topic == lidar_topic and isinstance(p, PointCloud) and 1.0 <= (p.stamp_ns - SIM_EPOCH_NS) / NS_PER_S < 2.0:
            frozen = frozen or p
            p = PointCloud(p.stamp_ns, frozen.frame_id, frozen.points)  # same points, fresh stamp
        out.append((topic, t, p))
    run = _run(out)
    late_in = [r for r in run.records if 1.5 <= r.drive_s < 2.0]
    assert late_in and all("lidar" not in r.modalities for r in late_in)


def test_stamp_jump_and_bad_payloads_are_counted_not_raised() -> None:
    ev = list(_events("urban", 8, 2.0))
    lidar_topic = _rig().sensors["lidar_top"].topic
    bad = []
    for i, (topic, t, p) in enumerate(ev):
        if topic == lidar_topic and i % 7 == 0 and isinstance(p, PointCloud):
            bad.append((topic, t, dataclasses.replace(p, stamp_ns=p.stamp_ns - 30 * NS_PER_S)))  # stamp jump back
        else:
            bad.append((topic, t, p))
    run = _run(bad)
    assert run.records, "no output at all"
    total_rejected = sum(sum(v.values()) for v in run.rejected.values())
    assert total_rejected > 0
    assert all(r.error == "" for r in run.records)


def test_pipeline_error_is_counted_and_fusion_continues() -> None:
    ev = _events("urban", 9, 1.5)
    model, backend = _model()

    class Flaky:  # a backend that fails on every third fusion stage (a device error at the boundary)
        def __init__(self) -> None:
            self.n = 0

        def describe(self) -> str:
            return "flaky"

        def run(self, stage, inputs):
            if stage == "fusion_head":
                self.n += 1
                if self.n % 3 == 0:
                    raise RuntimeError("device lost")
            return backend.run(stage, inputs)

    pipe = FusionPipeline(_rig(), model, Flaky(), PipelineConfig.from_manifest(model.raw))
    run = evaluate_bag(iter(ev), _rig(), pipe, BagEvalConfig(robustness=False), start_ns=SIM_EPOCH_NS)
    failed = [r for r in run.records if r.pred is None]
    ok = [r for r in run.records if r.pred is not None]
    assert failed and ok
    assert run.counters["bundles_failed"] == len(failed)
    assert all("device lost" in r.error for r in failed)


def test_robustness_matrix_runs_every_pattern_and_strategy() -> None:
    run = _run(_events("urban", 10, 1.5), robustness=True)
    keys = set(run.variants)
    assert {(p, s) for p in ("all", "camera_missing", "lidar_only") for s in ("intermediate", "late", "auto")} <= keys
    n = {len(v) for v in run.variants.values()}
    assert len(n) == 1 and n.pop() == sum(1 for r in run.records if r.gt is not None and r.pred is not None)
    # the same cells inside the kept sensors' coverage: LiDAR (360°) sees everything the full set sees,
    # the front camera + radar much less; the all-sensor detections there are the full run's, cut
    assert set(run.regions) == keys
    for (p, s), frames in run.regions.items():
        for (gt, pred, _full), (gt_v, pred_v) in zip(frames, run.variants[(p, s)], strict=True):
            assert len(gt) <= len(gt_v) and len(pred) <= len(pred_v)
    n_gt = {p: sum(len(g) for g, _, _ in run.regions[(p, "auto")]) for p in ("all", "lidar_only", "lidar_missing")}
    assert n_gt["lidar_only"] == n_gt["all"] > 2 * n_gt["lidar_missing"] > 0
    for (_g, pred, full), (_, full_v) in zip(run.regions[("all", "auto")], run.variants[("all", "auto")], strict=True):
        np.testing.assert_array_equal(full.boxes, pred.boxes)
        assert len(full) <= len(full_v)


def test_parse_drop() -> None:
    rig = _rig()
    d = parse_drop("camera,radar@5-8", rig)
    assert set(d.sensors) == {"camera_front", "radar_front"} and (d.t0_s, d.t1_s) == (5.0, 8.0)
    assert parse_drop("lidar_top", rig).active(1e6)
    for bad in ("", "sonar@1-2", "camera@8-5", "camera@x-2"):
        with pytest.raises(ValueError, match="--drop"):
            parse_drop(bad, rig)


def test_pipelining_gives_the_same_detections() -> None:
    """Encoding the LiDAR sweep on arrival (pipelining) must not change a single number."""
    ev = _events("highway", 11, 1.5)
    runs = []
    for pipelining in (True, False):
        cfg = BagEvalConfig(robustness=False, settings=EngineSettings(pipelining=pipelining))
        runs.append(evaluate_bag(iter(ev), _rig(), _pipeline(), cfg, start_ns=SIM_EPOCH_NS))
    on, off = runs
    assert any("prefetched.lidar" in r.timings_ms for r in on.records)
    assert not any("prefetched.lidar" in r.timings_ms for r in off.records)
    assert len(on.records) == len(off.records)
    for a, b in zip(on.records, off.records, strict=True):
        np.testing.assert_array_equal(a.pred.boxes, b.pred.boxes)
        np.testing.assert_array_equal(a.pred.scores, b.pred.scores)


def test_previous_lidar_sweep_is_deskewed_to_t_and_left_out_after_a_gap() -> None:
    """The network's second LiDAR sweep: the one before, moved to the bundle's T; none after a gap or reset."""
    from ros_fusion.core import network_io as nio
    from ros_fusion.core.compensation import deskew_lidar
    from ros_fusion.core.point_times import point_times_ns
    from ros_fusion.core.sync import Bundle, Member
    from ros_fusion.core.types import ImuSample

    rig = _rig()
    lidar = rig.sensors["lidar_top"]
    pipe = FusionPipeline(rig, None, None)  # pre-processing only, as datasets are made from bags
    clouds = []
    for topic, _, payload in _events("highway", 11, 1.5):
        if isinstance(payload, ImuSample):
            pipe.add_imu(payload)
        elif topic == lidar.topic:
            clouds.append(payload)
    n = len(nio.LIDAR_SWEEP_CHANNELS)

    def lidar_bev(cloud: PointCloud) -> np.ndarray:
        t = int(cloud.stamp_ns)
        bundle = Bundle(t, lidar.name, {lidar.name: Member(t, t, cloud, 0)}, frozenset(), 0, t)
        return pipe.network_inputs(bundle).arrays["lidar_bev"]

    def raster_at(cloud: PointCloud, t: int) -> np.ndarray:
        xyz = deskew_lidar(cloud.xyz(), point_times_ns(cloud), t, pipe.ego, lidar.extrinsic)
        return pipe.grid.lidar_raster(np.asarray(xyz, np.float32), normalised_intensity(cloud, lidar.intensity_max))

    first = lidar_bev(clouds[1])
    assert first[:n].any() and not first[n:].any()  # nothing before it yet
    second = lidar_bev(clouds[2])
    t2 = int(clouds[2].stamp_ns)
    np.testing.assert_allclose(second[n:], raster_at(clouds[1], t2), atol=1e-6)
    # the highway ego moves ~2.5 m per sweep: left where it was captured, the sweep would not match
    assert np.abs(second[n:] - raster_at(clouds[1], int(clouds[1].stamp_ns))).max() > 0.5
    assert not lidar_bev(clouds[4])[n:].any()  # clouds[3] never came: a gap, not a previous sweep
    assert lidar_bev(clouds[5])[n:].any()
    pipe.reset()
    assert not lidar_bev(clouds[6])[n:].any()
    assert pipe.counters["lidar_without_previous_sweep"] == 3


def test_pipeline_detections_scored_by_nuscenes_devkit_agree() -> None:
    """The same pipeline detections, scored by our metrics and by nuscenes-devkit: mAP within 0.01."""
    pytest.importorskip("nuscenes")
    from ros_fusion.eval.bag_eval import scored_frames
    from ros_fusion.eval.detection_metrics import evaluate
    from ros_fusion.eval.devkit_check import devkit_map

    run = _run(_events("urban", 12, 3.0))
    frames = scored_frames([run])
    assert len(frames) >= 20 and sum(len(p) for _, p in frames) > 50
    ours = evaluate(frames).mean_ap
    theirs = devkit_map(frames, tuple(_model()[0].classes))["mAP"]
    assert np.isfinite(ours) and ours > 0.05  # a real result, not an empty one
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_a_missing_radar_of_several_takes_its_sector_out_of_the_radar_coverage() -> None:
    """Surround rig, rear radars withheld for a second: the network is told radar no longer sees behind."""
    rig = load_rig(share_dir() / "config" / "rig_surround.yaml")
    model, backend = _model()
    seen: list[tuple[int, np.ndarray]] = []

    class Recording(FusionPipeline):  # records what the network was given; computes nothing itself
        def run(self, prep, **kw):
            seen.append((prep.t_ns, self.coverage(prep)[2]))
            return super().run(prep, **kw)

    pipe = Recording(rig, model, backend, PipelineConfig.from_manifest(model.raw))
    events = ((e.topic, e.publish_ns, e.payload) for e in simulate_drive(rig, "urban", 3, 2.6))
    cfg = BagEvalConfig(drops=[DropSpec(("radar_back_left", "radar_back_right"), 1.0, 2.0)],
                        settings=EngineSettings())
    evaluate_bag(events, rig, pipe, cfg, name="t", start_ns=SIM_EPOCH_NS)
    i, j = pipe.pre.grid.cell_index(np.array([-30.0]), np.array([0.0]), 2)  # straight behind the car
    behind = {round((t - SIM_EPOCH_NS) / NS_PER_S, 1): float(c[i[0], j[0]]) for t, c in seen}
    before = [v for t, v in behind.items() if 0.5 <= t < 1.0]
    during = [v for t, v in behind.items() if 1.2 <= t < 1.9]
    after = [v for t, v in behind.items() if 2.3 <= t < 2.5]  # the bag ends at 2.6 s
    assert before and during and after
    assert before == [1.0] * len(before) and during == [0.0] * len(during) and after == [1.0] * len(after)


def test_still_frames_never_borrow_the_sweep_before() -> None:
    """A still-frame rig (KITTI object): consecutive sweeps one period apart are separate scenes."""
    from ros_fusion.core import network_io as nio
    from ros_fusion.core.sync import Bundle, Member

    n = len(nio.LIDAR_SWEEP_CHANNELS)
    clouds = [p for topic, _, p in _events("urban", 12, 1.0) if topic == _rig().sensors["lidar_top"].topic]

    def prev_channels(rig) -> list[bool]:
        pipe = FusionPipeline(rig, None, None)
        out = []
        for c in clouds[:4]:
            t = int(c.stamp_ns)
            bundle = Bundle(t, "lidar_top", {"lidar_top": Member(t, t, c, 0)}, frozenset(), 0, t)
            out.append(bool(pipe.network_inputs(bundle).arrays["lidar_bev"][n:].any()))
        return out, pipe.counters

    moving, _ = prev_channels(_rig())
    assert moving == [False, True, True, True]  # a drive: each sweep after the first has its previous one
    still_rig = _rig()
    still_rig.still_frames = True
    still, counters = prev_channels(still_rig)
    assert still == [False] * 4 and counters["lidar_still_frames"] == 4
    assert counters["lidar_without_previous_sweep"] == 0  # not a gap: the rig says so


# --------------------------------------------------------------------------- detectors: network, geometric, both
def test_detectors_setting_is_parsed_and_checked() -> None:
    from ros_fusion.core.rig import ConfigError
    from ros_fusion.runtime.pipeline import parse_detectors

    assert parse_detectors("geometric+network") == ("network", "geometric")
    assert parse_detectors(["geometric"]) == ("geometric",)
    with pytest.raises(ConfigError, match="detectors.*clustering"):
        parse_detectors("network+clustering")
    with pytest.raises(ConfigError, match="detectors"):
        PipelineConfig.from_manifest({}, detectors="")
    with pytest.raises(ConfigError, match="needs a model bundle"):
        FusionPipeline(_rig(), None, None, PipelineConfig(detectors=("network", "geometric")))


def test_geometric_detector_alone_needs_no_model_and_finds_the_simulated_cars() -> None:
    """No model bundle at all: the geometric detector is the pipeline's only detector (merged late)."""
    events = _events("urban", 7, 2.0)
    cfg = BagEvalConfig(robustness=False, settings=EngineSettings())
    pipe = FusionPipeline(_rig(), None, None, PipelineConfig(detectors=("geometric",)))
    run = evaluate_bag(iter(events), _rig(), pipe, cfg, name="t", start_ns=SIM_EPOCH_NS)
    fused = [r for r in run.records if r.pred is not None and r.gt is not None]
    assert len(fused) >= 15
    assert {r.mode for r in fused} <= {"late", "degraded"}
    assert all("geometric.lidar" in r.timings_ms for r in fused if "lidar" in r.modalities)
    assert not any(k.startswith("encode") for r in fused for k in r.timings_ms)  # no network ran
    car = _rig_classes().index("car")
    found = total = 0
    for r in fused:
        g = r.gt.boxes[(r.gt.labels == car) & (np.hypot(r.gt.boxes[:, 0], r.gt.boxes[:, 1]) < 20)]
        p = r.pred.boxes[r.pred.labels == car]
        total += len(g)
        for b in g:
            found += bool(len(p)) and float(np.min(np.hypot(p[:, 0] - b[0], p[:, 1] - b[1]))) < 2.0
        w = r.pred.weights
        assert np.all(w[:, 0] == 0) and np.allclose(w.sum(axis=1), 1.0)  # LiDAR/radar only, never the camera
    assert total > 0 and found / total > 0.5, (found, total)


def test_network_plus_geometric_merges_both_and_attributes_to_the_sensors() -> None:
    events = _events("urban", 7, 2.0)
    both = _run(events, detectors=("network", "geometric"))
    net = _run(events)
    pairs = [(a, b) for a, b in zip(both.records, net.records, strict=True)
             if a.pred is not None and b.pred is not None]
    assert pairs and all(a.t_ns == b.t_ns for a, b in pairs)
    merged = [a for a, _ in pairs if a.mode == "intermediate"]
    assert merged and all("late.merge" in a.timings_ms for a in merged)
    assert all("geometric.lidar" in a.timings_ms for a in merged if "lidar" in a.modalities)
    assert any(len(a.pred) != len(b.pred) or not np.array_equal(a.pred.boxes, b.pred.boxes) for a, b in pairs)
    for a in merged:
        if len(a.pred):
            assert np.allclose(a.pred.weights.sum(axis=1), 1.0, atol=1e-4)


def _rig_classes() -> tuple[str, ...]:
    return tuple(_model()[0].classes)


def test_doppler_ego_fit_runs_once_per_radar_scan_for_network_and_geometric() -> None:
    """Without IMU/odometry the radar's ego velocity comes from each scan's Doppler; the network and the
    geometric detector read the same scan, and the fit is made (and counted) once per scan."""
    full = _rig()
    motion = ("imu", "odometry")
    rig = dataclasses.replace(full, sensors={n: s for n, s in full.sensors.items() if s.modality.value not in motion})
    motion_topics = {s.topic for s in full.sensors.values() if s.modality.value in motion}
    events = [e for e in _events("urban", 7, 2.0) if e[0] not in motion_topics]
    cfg = BagEvalConfig(robustness=False, settings=EngineSettings())
    model, backend = _model()
    counts = {}
    for detectors in (("network",), ("network", "geometric")):
        pipe = FusionPipeline(rig, model, backend, PipelineConfig.from_manifest(model.raw, detectors=detectors))
        run = evaluate_bag(iter(events), rig, pipe, cfg, name="t", start_ns=SIM_EPOCH_NS)
        counts[detectors] = (run.counters.get("pipeline.radar_doppler_ego", 0)
                             + run.counters.get("pipeline.radar_doppler_ego_failed", 0))
    assert counts[("network",)] > 0
    assert counts[("network", "geometric")] == counts[("network",)], counts
