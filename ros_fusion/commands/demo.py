"""`ros-fusion demo`: the README's main command.

Generates (or reuses) a simulated drive, starts the node graph exactly as
`ros-fusion launch` does, replays the bag into it in real time as a separate
process, shows a live status line (fusion mode, latency, detections, sensor
states), and ends with what the node saw per sensor (rates, ages, drops,
rejects, state), the detections scored against the drive's ground truth per
fusion mode, how fast the fallback engaged and recovered around each injected
fault, end-to-end latency, and a report folder with metrics.json, report.md
and a BEV picture of detections vs ground truth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.events import SIM_EPOCH_NS

HELP = """\
Run the whole system on the embedded default: a simulated drive (scenario,
seed and duration below) on the default rig, replayed live through the node
graph started from the node plan. The bag is cached under --cache-dir and
reused unless --fresh. Needs nothing but this package: no dataset, no network.

examples:
  ros-fusion demo
  ros-fusion demo --scenario night_rain --duration 30
  ros-fusion demo --fresh --seed 3
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a drive and run it live through the node graph (the README's main command)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenario", default="sensor_faults", help="simulated scenario (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default: %(default)s)")
    p.add_argument("--duration", type=float, default=20.0, help="drive length in seconds (default: %(default)s)")
    p.add_argument("--rig-file", default="", help="sensor rig YAML (default: config/rig_default.yaml)")
    p.add_argument("--cache-dir", default="cache", help="where generated bags are kept (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="regenerate the bag even if a cached one exists")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default: %(default)s)")
    p.add_argument(
        "--domain-id", type=int, default=None,
        help="ROS_DOMAIN_ID for the demo's nodes (default: the environment's, else 0)",
    )
    p.add_argument("--node-param", action="append", default=[], metavar="KEY=VALUE",
                   help="set a fusion_node parameter for this run (repeatable), e.g. warm_up_rounds=0")
    p.add_argument("--startup-timeout", type=float, default=30.0, help="seconds to wait for fusion_node (default: 30)")
    p.add_argument("-o", "--output", default="", metavar="DIR",
                   help="where the report, metrics.json and the BEV picture go (default: <cache-dir>/demo_report)")
    p.set_defaults(func=run)


def _bag_path(args: argparse.Namespace) -> Path:
    dur = f"{args.duration:g}".replace(".", "p")
    return Path(args.cache_dir) / f"demo_{args.scenario}_s{args.seed}_{dur}s.mcap"


@dataclass
class DriveClock:
    """Maps wall time to drive time (seconds since the simulated drive began).

    The replay shifts stamps onto the wall clock (``--stamp-now``) by one offset,
    so the first ground-truth message received — whose original stamp is read
    from the bag — pins that offset. Times in the report are then drive times,
    comparable with the fault schedule recorded in the bag's metadata.
    """

    first_gt_stamp_ns: int
    rate: float
    frames_in_bag: int
    faults: list[Any]
    topic_counts: dict[str, int] = field(default_factory=dict)  # messages per topic in the bag
    shifted_first_ns: int | None = None
    frames: int = 0

    @staticmethod
    def from_bag(path: Path, rate: float) -> DriveClock:
        from ..bag.info import header_stamp_ns
        from ..bag.reader import BagReader
        from ..core.events import GROUND_TRUTH_TOPIC
        from .eval import bag_faults

        reader = BagReader(path)
        first = next((header_stamp_ns(data) for _, _, _, data in reader.messages([GROUND_TRUTH_TOPIC])), None)
        info = reader.topics.get(GROUND_TRUTH_TOPIC)
        faults, _ = bag_faults(path)
        return DriveClock(first or SIM_EPOCH_NS, rate, info.count if info else 0, faults,
                          {name: t.count for name, t in reader.topics.items()})

    def on_ground_truth(self, data: bytes) -> None:
        from ..bag.info import header_stamp_ns

        self.frames += 1
        if self.shifted_first_ns is None:
            self.shifted_first_ns = header_stamp_ns(data)

    def drive_time_s(self, wall_ns: int) -> float | None:
        if self.shifted_first_ns is None:
            return None
        return ((self.first_gt_stamp_ns - SIM_EPOCH_NS) + (wall_ns - self.shifted_first_ns) * self.rate) / 1e9


@dataclass
class SensorTimeline:
    """What the demo saw of one sensor over the drive, from successive /diagnostics."""

    rates: list[float] = field(default_factory=list)  # rate_hz samples while the sensor was OK
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # (state, t_start, t_end) relative to replay
    last_transition_ns: int = -1  # newest state change already taken from `transitions`

    def add(self, t: float, state: str, rate_hz: float) -> None:
        if not self.spans and state != "OK":
            return  # before the sensor's first message: replay start-up, not a sensor state
        if state == "OK":
            self.rates.append(rate_hz)
        if self.spans and self.spans[-1][0] == state:
            self.spans[-1] = (state, self.spans[-1][1], t)
        else:
            self.spans.append((state, t, t))

    def add_transitions(self, value: str, to_drive_s: Callable[[int], float | None]) -> None:
        """State changes from the `transitions` diagnostics value ("STALE@<ns>,OK@<ns>", node clock).

        /diagnostics comes once a second; a camera gap of 0.9 s can begin and end between two
        messages, so the sampled states alone would miss it. Changes already seen are skipped.
        """
        for item in filter(None, (value or "").split(",")):
            state, _, ns = item.partition("@")
            try:
                t_ns = int(ns)
            except ValueError:
                continue
            if t_ns <= self.last_transition_ns:
                continue
            self.last_transition_ns = t_ns
            t = to_drive_s(t_ns)
            if t is None or (not self.spans and state != "OK"):
                continue
            if self.spans and self.spans[-1][0] == state:  # already sampled: it began earlier than seen
                st, a, b = self.spans[-1]
                self.spans[-1] = (st, min(a, t), b)
                continue
            if self.spans:
                st, a, b = self.spans[-1]
                self.spans[-1] = (st, a, max(b, t))
            self.spans.append((state, t, t))

    def describe(self) -> str:
        """e.g. ``OK, STALE 3.1–6.0 s, OK`` (states other than OK carry their times)."""
        parts = [st if st == "OK" else f"{st} {a:.1f}–{b:.1f}s" for st, a, b in self.spans]
        return ", ".join(parts) if parts else "never reported"


def _status_line(latest: dict[str, dict[str, Any]], elapsed: float, total: float) -> str:
    parts = [f"t={elapsed:5.1f}/{total:.0f}s"]
    for name, st in sorted(latest.items()):
        if name.endswith("/fusion"):
            continue
        v = st["values"]
        short = name.split("/", 1)[1]
        parts.append(f"{short} {v.get('state', '?')} {float(v.get('rate_hz', 0)):.0f}Hz")
    return " | ".join(parts)


def _report(latest: dict[str, dict[str, Any]], timelines: dict[str, SensorTimeline], rig, console) -> int:
    from rich.table import Table

    table = Table(title="What fusion_node saw during the drive (from /diagnostics)", expand=False)
    for col in ("sensor", "Hz nominal", "Hz seen", "age ms", "age max", "recv", "rejected", "drop", "states"):
        table.add_column(col, justify="left" if col in ("sensor", "rejected", "states") else "right",
                         overflow="fold")
    missing = []
    for spec in rig.sensors.values():
        st = latest.get(f"ros_fusion/{spec.name}")
        tl = timelines.get(spec.name, SensorTimeline())
        if st is None:
            missing.append(spec.name)
            table.add_row(spec.name, f"{spec.rate_hz:g}", "-", "-", "-", "-", "-", "-", "never reported")
            continue
        v = st["values"]
        reasons = {k.split(".", 1)[1]: n for k, n in v.items() if k.startswith("rejected.")}
        rejected = str(v.get("rejected", 0)) + ("" if not reasons else " (" + ", ".join(
            f"{k} {n}" for k, n in sorted(reasons.items())) + ")")
        rate = f"{statistics.median(tl.rates):.1f}" if tl.rates else "-"
        table.add_row(
            spec.name, f"{spec.rate_hz:g}", rate, f"{float(v.get('age_ms_mean', 0)):.1f}",
            f"{float(v.get('age_ms_max', 0)):.1f}", str(v.get("received", 0)), rejected,
            str(v.get("dropped", 0)), tl.describe(),
        )
    console.print(table)
    console.print("Hz seen: median of the node's rate estimate while the sensor was OK; age: receive time − "
                  "header.stamp (last diagnostics window); states: the node's OK/STALE/MISSING over drive time (s).")
    fusion = latest.get("ros_fusion/fusion")
    if fusion:
        console.print(f"fusion: {fusion['message']}")
    if missing:
        console.print(f"[red]no diagnostics for: {', '.join(missing)}[/red]")
        return 1
    return 0


def _live_status(mon: Any, latest: dict[str, dict[str, Any]], t: float, total: float) -> str:
    """Status line: drive time, fusion mode, last end-to-end latency, detections, sensor states."""
    parts = [f"t={t:5.1f}/{total:.0f}s"]
    if mon.modes:
        parts.append(f"mode {mon.modes[-1][1].split(' ')[1]}")
    if mon.outputs:
        recv, obs = mon.outputs[-1]
        parts.append(f"latency {(recv - int(obs.stamp_ns)) / 1e6:5.1f} ms")
        parts.append(f"{len(obs)} detections")
    line = _status_line(latest, t, total)
    return " | ".join(parts + line.split(" | ")[1:])


def _fusion_report(metrics: dict[str, Any], console) -> None:
    """Accuracy per fusion mode, fault response (mode switch timing) and end-to-end latency."""
    from rich.table import Table

    t = Table(title="Detections vs ground truth, per fusion mode (live)")
    for col in ("mode", "bundles", "scored frames", "mAP"):
        t.add_column(col, justify="left" if col == "mode" else "right")
    for mode, v in sorted(metrics.get("per_mode", {}).items()):
        m = v.get("mAP")
        t.add_row(mode, str(v.get("n_bundles", 0)), str(v.get("n_frames", 0)), "-" if m is None else f"{m:.3f}")
    s = metrics.get("summary", {})
    if s.get("mAP") is not None:
        t.add_row("[bold]all[/]", str(metrics.get("bundles", {}).get("total", "")), str(s.get("n_frames", "")),
                  f"{s['mAP']:.3f}")
    console.print(t)
    faults = metrics.get("faults") or []
    if faults:
        f = Table(title="Sensor faults and the fusion fallback (drive seconds)")
        for col in ("fault", "mode before", "mode without it", "left out after", "back in after",
                    "mode switch after", "longest output gap"):
            f.add_column(col)
        for x in faults:
            def sec(v: Any) -> str:
                return "-" if v is None else f"{v:.2f} s"
            f.add_row(x["fault"], str(x["mode_before"]), str(x["mode_during"]), sec(x["excluded_after_s"]),
                      sec(x["included_after_s"]), sec(x["mode_switch_after_s"]), sec(x["max_gap_during_s"]))
        console.print(f)
    live = metrics.get("live", {})
    e2e = live.get("end_to_end_ms") or {}
    if e2e:
        console.print(f"end-to-end latency (capture stamp → ~/obstacles received): p50 {e2e['p50']:.1f} ms, "
                      f"p95 {e2e['p95']:.1f} ms, p99 {e2e['p99']:.1f} ms, max {e2e['max']:.1f} ms over "
                      f"{int(e2e['n'])} outputs; frames without output: {live.get('frames_without_output')}, "
                      f"bundles dropped (busy): {live.get('bundles_dropped_busy')}")
    if live.get("startup"):
        from ..eval.report import describe_startup

        console.print(describe_startup(live["startup"]))


def _bev_scene(bag: Path, records: list[Any], rig, classes: tuple[str, ...]) -> Any:
    """The BEV picture: the intermediate-mode frame with the most ground truth, its LiDAR sweep from the bag."""
    from ..eval.plots import PICTURE_MIN_SCORE, BevScene, confident
    from ..ros.bag_io import read_payloads

    cands = [r for r in records if r.mode == "intermediate" and r.gt is not None and r.pred is not None]
    if not cands:
        cands = [r for r in records if r.gt is not None and r.pred is not None]
    if not cands:
        return None
    rec = max(cands, key=lambda r: (len(r.gt), -r.t_ns))
    from ..core.types import Modality

    lidar = rig.of(Modality.LIDAR)
    xyz = None
    if lidar:
        for _, _, cloud in read_payloads(bag, [lidar[0].topic]):
            if int(cloud.stamp_ns) == int(rec.t_ns):
                E = lidar[0].extrinsic
                xyz = cloud.xyz() @ E[:3, :3].T + E[:3, 3]
                break
    return BevScene(gt=rec.gt, pred=confident(rec.pred), classes=classes, lidar_xyz=xyz,
                    title=f"{bag.name} t={rec.drive_s:.1f}s (live, score ≥ {PICTURE_MIN_SCORE:g})", mode=rec.mode)


def run(args: argparse.Namespace) -> int:
    """The demo, then its wall time and exit status on one line (what a first run on a new machine costs)."""
    from ..console import make_console

    console = make_console()
    t0 = time.monotonic()
    rc = _demo(args, console)
    console.print(f"demo {'finished' if rc == 0 else 'FAILED'} in {time.monotonic() - t0:.1f} s (exit {rc})")
    return rc


def _demo(args: argparse.Namespace, console: Any) -> int:
    from ..core.rig import ConfigError, load_rig
    from ..paths import default_rig_path
    from ..ros.live_run import LiveRun
    from .eval_live import node_config
    from .simulate import simulate_to_bag

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    rig_path = Path(args.rig_file) if args.rig_file else default_rig_path()
    try:
        rig = load_rig(rig_path)
    except ConfigError as e:
        console.print(f"[red]ros-fusion demo: error: {e}[/red]")
        return 2

    bag = _bag_path(args)
    if args.fresh or not bag.exists():
        t0 = time.monotonic()
        bag.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"simulating {args.scenario} seed {args.seed}, {args.duration:g} s of drive → {bag}")
        simulate_to_bag(rig, args.scenario, args.seed, args.duration, bag, overwrite=True)
        console.print(f"wrote {bag} in {time.monotonic() - t0:.1f} s")
    else:
        console.print(f"reusing {bag} (--fresh to regenerate)")

    out_dir = Path(args.output) if args.output else Path(args.cache_dir) / "demo_report"
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(args.cache_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    clock = DriveClock.from_bag(bag, args.rate)
    try:
        cfg_file = node_config("auto", args.node_param, log_dir)
        live = LiveRun(bag, str(rig_path), rate=args.rate, log_path=log_dir / "demo_nodes.log", record_outputs=True,
                       echo=lambda line: console.print(line, markup=False, highlight=False),
                       on_ground_truth=clock.on_ground_truth,
                       launch_overrides={"config_file": cfg_file} if cfg_file else {})
    except (ConfigError, ValueError) as e:
        console.print(f"[red]ros-fusion demo: error: {e}[/red]")
        return 2
    rc = 0
    timelines: dict[str, SensorTimeline] = {}
    seen_arrays = 0
    try:
        console.print(f"starting node graph: {', '.join(live.node_names)} (logs: {log_dir / 'demo_nodes.log'})")
        err = live.start(args.startup_timeout)
        if err:
            from rich.markup import escape

            console.print(f"[red]{escape(err)}[/red]")  # node log lines hold [brackets] rich would eat
            return 1
        warm = f" (warm-up {float(live.warm_up_ms):.0f} ms: every stage ran once)" if live.warm_up_ms else ""
        console.print(f"fusion_node is active{warm}; replaying the drive in real time")
        total = args.duration
        with console.status("") as status:
            def tick(mon: Any) -> None:
                nonlocal seen_arrays
                latest = mon.latest
                t = clock.drive_time_s(time.time_ns())
                if mon.arrays_received != seen_arrays and t is not None and t <= args.duration:
                    seen_arrays = mon.arrays_received
                    for name, st in latest.items():
                        if not name.endswith("/fusion"):
                            v = st["values"]
                            tl = timelines.setdefault(name.split("/", 1)[1], SensorTimeline())
                            tl.add_transitions(str(v.get("transitions", "")), clock.drive_time_s)
                            tl.add(t, str(v.get("state", "?")), float(v.get("rate_hz", 0) or 0))
                status.update(_live_status(mon, latest, t or 0.0, total))

            replay_rc = live.run_replay(tick)
        out = live.replay_output
        if replay_rc != 0:
            console.print(f"[red]replay failed (exit {replay_rc}):[/red]\n{out}")
            rc = 1
        else:
            console.print(out.strip().splitlines()[-1] if out.strip() else "replay done")
        _settle_until_counted(live, {s.name: clock.topic_counts[s.topic] for s in rig.sensors.values()
                                     if s.topic in clock.topic_counts})
        rc = max(rc, _report(live.monitor.latest, timelines, rig, console))
        console.print(f"ground truth frames received: {clock.frames} of {clock.frames_in_bag}")
        rc = max(rc, _score_live(live, bag, rig, clock, out_dir, console))
        if live.node_failed():
            console.print(f"[red]a node died: {live.node_failed()}[/red]")
            rc = 1
    finally:
        live.close()
    return rc


def _settle_until_counted(live: Any, expected: dict[str, int], min_s: float = 1.5, max_s: float = 6.0) -> None:
    """Listen until /diagnostics accounts for every replayed message (received + rejected), at most `max_s`.

    `expected`: messages per rig sensor in the bag.
    A fixed wait of one diagnostics period was not always enough on a loaded machine:
    the last IMU message was sometimes counted only in the period after. What is still
    missing after `max_s` is reported as it is (a real loss shows).
    """
    live.settle(min_s)
    end = time.monotonic() + max_s - min_s
    while time.monotonic() < end:
        latest = live.monitor.latest
        short = [n for n, want in expected.items()
                 if (v := latest.get(f"ros_fusion/{n}", {}).get("values")) is None
                 or int(float(v.get("received", 0))) + int(float(v.get("rejected", 0))) < want]
        if not short:
            return
        live.settle(0.5)


def _score_live(live: Any, bag: Path, rig, clock: DriveClock, out_dir: Path, console) -> int:
    """Score what fusion_node published against ground truth; write the report and the BEV picture."""
    from ..eval.report import write_outputs
    from .eval_live import score_live

    mon = live.monitor
    if not mon.ground_truth:
        console.print("[red]no ground truth received: nothing to score[/red]")
        return 1
    if not mon.outputs:
        console.print("[red]fusion_node published no obstacles[/red]")
        return 1
    diag = mon.latest.get("ros_fusion/fusion", {}).get("values", {})
    metrics, records = score_live(bag.name, list(mon.ground_truth), list(mon.outputs), list(mon.modes), diag,
                                  clock.first_gt_stamp_ns, SIM_EPOCH_NS, clock.faults, rig)
    metrics["run"] = {"bags": [str(bag)], "mode": "live demo", "rate": clock.rate}
    _fusion_report(metrics, console)
    from ..core.types import DEFAULT_CLASSES

    scene = _bev_scene(bag, records, rig, DEFAULT_CLASSES)
    written = write_outputs(out_dir, metrics, bev=scene)
    console.print(f"report: {out_dir / 'report.md'}; BEV picture: {out_dir / 'bev.png'} ({len(written)} files)")
    return 0
