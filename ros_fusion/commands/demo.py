"""`ros-fusion demo`: the README's main command.

Generates (or reuses) a simulated drive, starts the node graph exactly as
`ros-fusion launch` does, replays the bag into it in real time as a separate
process, shows a live status line, and ends with what the node saw per sensor
(rates, ages, drops, rejects, state). It grows with the pipeline issues.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sim.events import SIM_EPOCH_NS

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
    p.add_argument("--startup-timeout", type=float, default=30.0, help="seconds to wait for fusion_node (default: 30)")
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
    shifted_first_ns: int | None = None
    frames: int = 0

    @staticmethod
    def from_bag(path: Path, rate: float) -> DriveClock:
        from ..bag.info import header_stamp_ns
        from ..bag.reader import BagReader
        from ..sim.events import GROUND_TRUTH_TOPIC
        from ..sim.faults import parse_fault

        reader = BagReader(path)
        first = next((header_stamp_ns(data) for _, _, _, data in reader.messages([GROUND_TRUTH_TOPIC])), None)
        info = reader.topics.get(GROUND_TRUTH_TOPIC)
        faults = [parse_fault(f) for f in reader.metadata.get("faults", "").split()]
        return DriveClock(first or SIM_EPOCH_NS, rate, info.count if info else 0, faults)

    def on_ground_truth(self, data: bytes) -> None:
        from ..bag.info import header_stamp_ns

        self.frames += 1
        if self.shifted_first_ns is None:
            self.shifted_first_ns = header_stamp_ns(data)

    def drive_time_s(self, wall_ns: int) -> float | None:
        if self.shifted_first_ns is None:
            return None
        return ((self.first_gt_stamp_ns - SIM_EPOCH_NS) + (wall_ns - self.shifted_first_ns) * self.rate) / 1e9


#: What the node's health can show for each fault kind today (grows with the sync issue).
FAULT_EXPECTATION = {
    "drop": "STALE after its timeout, OK again when data returns",
    "freeze": "identical payloads detected: STALE (frozen data) until fresh data has been healthy a few times",
    "delay": "stamps jump back at the start (stamp_backwards rejects); ages grow by the delay",
    "noise": "not a health matter: the pipeline's detections degrade instead",
}


def _fault_report(faults: list[Any], timelines: dict[str, SensorTimeline], console) -> None:
    """Each injected fault next to what the node reported for that sensor around it."""
    if not faults:
        return
    from rich.table import Table

    table = Table(title="Injected faults (bag metadata) and what the node reported")
    for col in ("fault", "sensor", "window s", "node states around it", "detected after", "recovered after",
                "expected today"):
        table.add_column(col, overflow="fold")
    for f in faults:
        tl = timelines.get(f.sensor, SensorTimeline())
        near = [(st, a, b) for st, a, b in tl.spans if st != "OK" and b >= f.start_s - 0.5 and a <= f.end_s + 2.0]
        states = ", ".join(f"{st} {a:.1f}–{b:.1f}" for st, a, b in near) or "stayed OK"
        detected = f"{near[0][1] - f.start_s:+.2f} s" if near else "-"
        back = [a for st, a, _ in tl.spans if st == "OK" and a > f.end_s - 0.1]
        recovered = f"{back[0] - f.end_s:+.2f} s" if near and back else "-"
        table.add_row(f.kind, f.sensor, f"{f.start_s:.1f}–{f.end_s:.1f}", states, detected, recovered,
                      FAULT_EXPECTATION.get(f.kind, ""))
    console.print(table)
    console.print("times are drive seconds; detection/recovery resolution is the 1 s diagnostics period.")


@dataclass
class SensorTimeline:
    """What the demo saw of one sensor over the drive, from successive /diagnostics."""

    rates: list[float] = field(default_factory=list)  # rate_hz samples while the sensor was OK
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # (state, t_start, t_end) relative to replay

    def add(self, t: float, state: str, rate_hz: float) -> None:
        if not self.spans and state != "OK":
            return  # before the sensor's first message: replay start-up, not a sensor state
        if state == "OK":
            self.rates.append(rate_hz)
        if self.spans and self.spans[-1][0] == state:
            self.spans[-1] = (state, self.spans[-1][1], t)
        else:
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


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..core.rig import ConfigError, load_rig
    from ..paths import default_rig_path
    from ..ros.node_plan import LaunchArgs, plan_nodes
    from ..ros.supervisor import Supervisor
    from .simulate import simulate_to_bag

    # A report table needs room; piped output would otherwise wrap at 80 columns.
    console = Console(width=max(shutil.get_terminal_size((150, 24)).columns, 150))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    rig_path = Path(args.rig_file) if args.rig_file else default_rig_path()
    try:
        rig = load_rig(rig_path)
        specs = plan_nodes(LaunchArgs(rig_file=str(rig_path)))
    except ConfigError as e:
        console.print(f"[red]ros-fusion demo: error: {e}[/red]")
        return 2
    for key, value in specs[0].environment.items():
        os.environ.setdefault(key, value)

    bag = _bag_path(args)
    if args.fresh or not bag.exists():
        t0 = time.monotonic()
        bag.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"simulating {args.scenario} seed {args.seed}, {args.duration:g} s of drive → {bag}")
        simulate_to_bag(rig, args.scenario, args.seed, args.duration, bag, overwrite=True)
        console.print(f"wrote {bag} in {time.monotonic() - t0:.1f} s")
    else:
        console.print(f"reusing {bag} (--fresh to regenerate)")

    from ..ros.monitor import RunMonitor

    log_dir = Path(args.cache_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    node_log = open(log_dir / "demo_nodes.log", "w")

    def node_line(line: str) -> None:
        node_log.write(line + "\n")
        node_log.flush()
        if any(w in line for w in ("WARN", "ERROR", "FATAL", "[launch]")):
            console.print(line, markup=False, highlight=False)

    sup = Supervisor(specs, write=node_line)
    clock = DriveClock.from_bag(bag, args.rate)
    monitor = RunMonitor("ros_fusion_demo", on_ground_truth=clock.on_ground_truth)
    replay = None
    rc = 0
    timelines: dict[str, SensorTimeline] = {}
    seen_arrays = 0
    try:
        console.print(f"starting node graph: {', '.join(s.name for s in specs)} (logs: {node_log.name})")
        sup.start()
        deadline = time.monotonic() + args.startup_timeout
        while not monitor.latest and time.monotonic() < deadline:
            monitor.spin_once(0.1)
            if any(rc is not None for rc in sup.returncodes.values()):
                console.print("[red]a node exited during start-up; see the log above[/red]")
                return 1
        if not monitor.latest:
            console.print(f"[red]no /diagnostics from fusion_node within {args.startup_timeout:g} s[/red]")
            return 1
        console.print("fusion_node is up; replaying the drive in real time")
        cmd = [sys.executable, "-m", "ros_fusion.cli", "replay", str(bag), "--rate", str(args.rate), "--stamp-now",
               "--wait-subscribers", "20", "--delay", "1.0"]  # delay: let both discovery sides settle
        replay = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        total = args.duration
        with console.status("") as status:
            while replay.poll() is None:
                monitor.spin_once(0.1)
                latest = monitor.latest
                t = clock.drive_time_s(time.time_ns())
                if monitor.arrays_received != seen_arrays and t is not None and t <= args.duration:
                    seen_arrays = monitor.arrays_received
                    for name, st in latest.items():
                        if not name.endswith("/fusion"):
                            v = st["values"]
                            timelines.setdefault(name.split("/", 1)[1], SensorTimeline()).add(
                                t, str(v.get("state", "?")), float(v.get("rate_hz", 0) or 0))
                status.update(_status_line(latest, t or 0.0, total))
        out = replay.stdout.read() if replay.stdout else ""
        if replay.returncode != 0:
            console.print(f"[red]replay failed (exit {replay.returncode}):[/red]\n{out}")
            rc = 1
        else:
            console.print(out.strip().splitlines()[-1] if out.strip() else "replay done")
        # One more diagnostics period so the last messages are counted.
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            monitor.spin_once(0.1)
        rc = max(rc, _report(monitor.latest, timelines, rig, console))
        console.print(f"ground truth frames received: {clock.frames} of {clock.frames_in_bag}")
        _fault_report(clock.faults, timelines, console)
        if any(r not in (None, 0) for r in sup.returncodes.values()):
            console.print(f"[red]a node died: {sup.returncodes}[/red]")
            rc = 1
    finally:
        if replay is not None and replay.poll() is None:
            replay.terminate()
        sup.stop()
        monitor.close()
        node_log.close()
    return rc
