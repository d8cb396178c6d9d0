"""`ros-fusion eval --live BAG`: the node graph on a real-time replay, scored like the offline run.

Design: docs/DESIGN.md §9; measured: docs/results.md §5.

One bag at a time: the rig recorded in the bag is written next to the outputs
and given to fusion_node; the node plan is the launch plan. The observer
records every ~/obstacles and ~/fusion_mode message with its local receive
time; after the replay the outputs are matched to ground truth by stamp (the
replay moves sensor and ground-truth stamps by the same offset), scored with
the same metrics, and compared with an offline run of the same bag.
End-to-end latency = receive time of ~/obstacles − its header stamp (the
bundle's capture time): sensor latency + waiting for the bundle + fusion +
publishing, on one clock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import EXIT_ERROR, EXIT_OK, fail

#: A live output belongs to a ground-truth frame when its stamp is this close (the replay keeps stamps exact).
MATCH_TOL_NS = 1_000_000


def node_config(strategy: str, params: list[str], out_dir: Path) -> str:
    """A fusion.yaml with `strategy` and ``KEY=VALUE`` node parameters set; '' when nothing changes."""
    if strategy == "auto" and not params:
        return ""
    import yaml

    from ..paths import share_dir
    from ..ros.params import SPECS_BY_NAME

    config_dir = share_dir() / "config"
    cfg = yaml.safe_load((config_dir / "fusion.yaml").read_text())
    entry = cfg["nodes"]["fusion_node"]
    if entry.get("params_file"):  # relative to the shipped config's folder, not to out_dir
        entry["params_file"] = str(config_dir / entry["params_file"])
    node = entry.setdefault("parameters", {}) or {}
    entry["parameters"] = node
    node["strategy"] = strategy
    for item in params:
        key, sep, text = item.partition("=")
        if not sep or key not in SPECS_BY_NAME:
            raise ValueError(f"--node-param {item!r}: expected KEY=VALUE with KEY one of {', '.join(SPECS_BY_NAME)}")
        node[key] = yaml.safe_load(text)
    path = out_dir / "fusion.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def live_records(gt_msgs: list[tuple[int, bytes]], outputs: list[tuple[int, Any]], modes: list[tuple[int, str]],
                 shift_ns: int, start_ns: int) -> tuple[list[Any], list[dict[str, Any]], list[float], int]:
    """Ground truth, outputs and modes of a live run → (FrameRecords, mode switches, latencies ms, unmatched GT).

    Stamps are moved back by `shift_ns` (the replay's offset) so drive times compare with the bag's faults.
    """
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    from ..core.types import NS_PER_S
    from ..eval.bag_eval import FrameRecord
    from ..ros.fusion_node import parse_mode_line
    from ..ros.obstacles import pointcloud2_to_obstacles

    by_stamp = {int(o.stamp_ns): o for _, o in outputs}
    out_stamps = np.array(sorted(by_stamp), np.int64)
    mode_at: dict[int, tuple[str, tuple[str, ...]]] = {}
    for _, text in modes:
        try:
            st, mode, mods = parse_mode_line(text)
        except ValueError:
            continue
        mode_at[st] = (mode, mods)
    records = []
    unmatched = 0
    for _, data in gt_msgs:
        gt = pointcloud2_to_obstacles(deserialize_message(data, PointCloud2))
        t = int(gt.stamp_ns)
        pred = None
        if len(out_stamps):
            k = int(np.clip(np.searchsorted(out_stamps, t), 1, len(out_stamps) - 1)) if len(out_stamps) > 1 else 0
            cand = min(out_stamps[max(k - 1, 0):k + 1], key=lambda s: abs(int(s) - t))
            if abs(int(cand) - t) <= MATCH_TOL_NS:
                pred = by_stamp[int(cand)]
        if pred is None:
            unmatched += 1
            pred = type(gt).empty(t, gt.frame_id)
        mode, mods = mode_at.get(int(pred.stamp_ns), ("missing", ()))
        t0 = t - shift_ns
        records.append(FrameRecord(t0, (t0 - start_ns) / NS_PER_S, gt, pred, mode, mods, {}))
    switches = []
    prev = None
    for st in sorted(mode_at):
        mode = mode_at[st][0]
        if prev is not None and mode != prev:
            switches.append({"t_s": round((st - shift_ns - start_ns) / NS_PER_S, 4), "from": prev, "to": mode,
                             "reason": "live"})
        prev = mode
    latencies = [(recv - int(o.stamp_ns)) / 1e6 for recv, o in outputs]
    return records, switches, latencies, unmatched


def score_live(bag_name: str, gt_msgs: list[tuple[int, bytes]], outputs: list[tuple[int, Any]],
               modes: list[tuple[int, str]], diag: dict[str, Any], first_gt_ns: int, start_ns: int,
               faults: list[Any], rig: Any) -> tuple[dict[str, Any], list[Any]]:
    """What a live run recorded → (the metrics dict `eval.report` renders, the per-frame records).

    Shared by `eval --live` and the demo: ground truth and outputs matched by stamp, the replay's stamp
    offset taken from the first ground-truth frame (`first_gt_ns` = its stamp in the bag), end-to-end
    latency from receive times, the node's counters from its last /diagnostics (`diag`), and the
    reaction to each injected fault.
    """
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    from ..core.types import NS_PER_S
    from ..eval.bag_eval import BagEvalConfig, BagRun, collect_metrics, fault_response
    from ..eval.report import STARTUP_WINDOW_S, latency_stats, startup_latency
    from ..ros.obstacles import pointcloud2_to_obstacles

    shift = int(pointcloud2_to_obstacles(deserialize_message(gt_msgs[0][1], PointCloud2)).stamp_ns) - first_gt_ns
    records, switches, latencies, unmatched = live_records(gt_msgs, outputs, modes, shift, start_ns)
    run = BagRun(bag_name, start_ns, records=records, switches=switches)
    metrics = collect_metrics([run], BagEvalConfig(robustness=False))
    lat = latency_stats([{"end_to_end": v} for v in latencies])
    # Per-stage timings are in the node's diagnostics (p50 of its window), not in its outputs.
    metrics["latency_ms"] = lat | {k.replace("latency_ms_p50.", "node_p50."): {"p50": float(v)}
                                   for k, v in diag.items() if k.startswith("latency_ms_p50.")}
    # Start-up: the first STARTUP_WINDOW_S of drive (from the first ground-truth frame) against the rest.
    t0_s = min(r.drive_s for r in records)
    startup = startup_latency([(int(o.stamp_ns) - shift - start_ns) / NS_PER_S - t0_s for _, o in outputs],
                              latencies)
    startup["frames_without_output_first"] = sum(
        1 for r in records if r.mode == "missing" and r.drive_s - t0_s < STARTUP_WINDOW_S)
    metrics["live"] = {
        "outputs": len(outputs), "ground_truth_frames": len(gt_msgs), "frames_without_output": unmatched,
        "bundles_dropped_busy": int(diag.get("bundles_dropped_busy", 0) or 0),
        "bundles_failed": int(diag.get("bundles_failed", 0) or 0),
        "end_to_end_ms": lat.get("end_to_end", {}),
        "warm_up_ms": diag.get("warm_up_ms"),
        "startup": startup,
    }
    metrics["faults"] = fault_response(run, faults, rig)
    return metrics, records


def run_live(args: argparse.Namespace) -> int:
    from ..console import make_console
    from ..core.events import GROUND_TRUTH_TOPIC
    from ..core.rig import ConfigError
    from ..eval.bag_eval import BagEvalConfig, collect_metrics, evaluate_bag
    from ..eval.report import describe_startup, render_console, write_outputs
    from ..ros.bag_io import read_payloads
    from ..ros.live_run import LiveRun
    from ..runtime.pipeline import FusionPipeline, PipelineConfig
    from .eval import bag_faults, bag_rig, load_model_and_backend

    if len(args.bags) != 1:
        return fail("eval", "--live evaluates one bag at a time")
    if args.drop:
        return fail("eval", "--drop is offline only: a live run replays the recording as it is")
    bag = args.bags[0]
    console = make_console(quiet=args.quiet)
    if args.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    out_dir = args.output or Path(tempfile.mkdtemp(prefix="ros_fusion_live_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        rig = bag_rig(bag, args.rig_file)
        model, backend = load_model_and_backend(args.models, args.backend, args.threads)
        model.check_rig(rig)
    except (ConfigError, ValueError) as e:
        return fail("eval", f"{bag}: {e}", EXIT_ERROR)
    rig_file = args.rig_file
    if rig_file is None:
        from ..ros.bag_io import read_rig_text

        rig_file = out_dir / "rig.yaml"
        text = read_rig_text(bag)
        if not text:
            return fail("eval", f"{bag}: no rig recorded; pass --rig-file")
        rig_file.write_text(text)
    faults, start_ns = bag_faults(bag)
    first_gt = next((int(p.stamp_ns) for _, _, p in read_payloads(bag, [GROUND_TRUTH_TOPIC])), None)
    if first_gt is None:
        return fail("eval", f"{bag}: no {GROUND_TRUTH_TOPIC} to score against")
    overrides: dict[str, Any] = {}
    try:
        cfg_file = node_config(args.strategy, args.node_param, out_dir)
    except ValueError as e:
        return fail("eval", str(e))
    if cfg_file:
        overrides["config_file"] = cfg_file
    live = LiveRun(bag, str(rig_file), rate=args.rate, log_path=out_dir / "nodes.log", record_outputs=True,
                   echo=lambda line: console.print(line, markup=False, highlight=False), launch_overrides=overrides)
    try:
        console.print(f"starting {', '.join(live.node_names)}; logs in {out_dir / 'nodes.log'}")
        err = live.start(60.0)
        if err:
            return fail("eval", err, EXIT_ERROR)
        console.print(f"replaying {bag} in real time (rate {args.rate:g})")
        with console.status("live replay") as status:
            def tick(mon: Any) -> None:
                status.update(f"live replay: {len(mon.outputs)} outputs, {len(mon.ground_truth)} ground-truth frames")

            rc = live.run_replay(tick)
        live.settle(2.0)
        if rc != 0:
            return fail("eval", f"replay failed (exit {rc}):\n{live.replay_output}", EXIT_ERROR)
        died = live.node_failed()
        diag = live.monitor.latest.get("ros_fusion/fusion", {}).get("values", {})
        gt_msgs, outputs, modes = list(live.monitor.ground_truth), list(live.monitor.outputs), list(live.monitor.modes)
    finally:
        live.close()
    if not gt_msgs:
        return fail("eval", "no ground truth was received during the replay", EXIT_ERROR)
    start = start_ns if start_ns is not None else first_gt
    metrics, _ = score_live(bag.name, gt_msgs, outputs, modes, diag, first_gt, start, faults, rig)
    metrics["live"]["nodes_died"] = died
    cfg = BagEvalConfig(strategy=args.strategy, robustness=False)
    # The same bag offline: live accuracy must match it.
    console.print("offline run of the same bag for comparison")
    pipeline = FusionPipeline(rig, model, backend, PipelineConfig.from_manifest(model.raw, strategy=args.strategy))
    off = evaluate_bag(read_payloads(bag), rig, pipeline, cfg, name=bag.name, start_ns=start_ns)
    off_metrics = collect_metrics([off], cfg)
    live_map = metrics["summary"].get("mAP")
    off_map = off_metrics["summary"].get("mAP")
    metrics["live"]["offline_mAP"] = off_map
    metrics["live"]["mAP_difference"] = (None if live_map is None or off_map is None else live_map - off_map)
    metrics["run"] = {"bags": [str(bag)], "strategy": args.strategy, "mode": "live", "rate": args.rate,
                      "model": str(model.root), "backend": "fusion_node (" + str(backend.describe()) + ")"}
    written = write_outputs(out_dir, metrics)
    for r in render_console(metrics):
        console.print(r)
    e2e = metrics["live"]["end_to_end_ms"]
    unmatched = metrics["live"]["frames_without_output"]
    console.print(
        f"live: {len(outputs)} outputs for {len(gt_msgs)} frames ({unmatched} without output); end-to-end latency "
        f"p50 {e2e.get('p50', float('nan')):.1f} / p95 {e2e.get('p95', float('nan')):.1f} / "
        f"p99 {e2e.get('p99', float('nan')):.1f} / max {e2e.get('max', float('nan')):.1f} ms; mAP live "
        f"{live_map if live_map is not None else float('nan'):.3f} vs offline "
        f"{off_map if off_map is not None else float('nan'):.3f}")
    console.print(describe_startup(metrics["live"]["startup"]))
    console.print(f"wrote {len(written)} files to {out_dir}")
    if args.output is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    return EXIT_ERROR if died else EXIT_OK
