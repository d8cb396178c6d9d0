"""Run the node graph on a bag in real time and watch it: the shared engine of `demo` and `eval --live`.

Starts the node plan (the same processes `ros-fusion launch` starts) under a
`Supervisor`, an observer node (`RunMonitor`) that listens to /diagnostics,
ground truth and — when recording — fusion_node's ~/obstacles and
~/fusion_mode, then replays the bag with ``--stamp-now`` (stamps moved onto
the wall clock by one offset, recorded latencies kept) in a subprocess, so the
replay's timing is not disturbed by this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .monitor import RunMonitor
from .node_plan import LaunchArgs, plan_nodes
from .supervisor import Supervisor

#: Node log lines kept to show when a node dies during start-up (the cause is usually in the last few).
TAIL_LINES = 12


@dataclass
class LiveRun:
    bag: Path
    rig_file: str
    rate: float = 1.0
    log_path: Path | None = None
    echo: Callable[[str], None] | None = None  # node log lines worth showing (warnings, errors)
    record_outputs: bool = False
    on_ground_truth: Callable[[bytes], None] | None = None
    launch_overrides: dict[str, Any] = field(default_factory=dict)
    replay_output: str = ""
    warm_up_ms: Any = None  # fusion_node's warm-up, from its first /diagnostics (None: off or not reported)

    def __post_init__(self) -> None:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.specs = plan_nodes(LaunchArgs(rig_file=self.rig_file, **self.launch_overrides))
        for key, value in self.specs[0].environment.items():
            os.environ.setdefault(key, value)
        self._log = open(self.log_path, "w") if self.log_path is not None else None
        self.sup = Supervisor(self.specs, write=self._line)
        self.monitor = RunMonitor("ros_fusion_live", on_ground_truth=self.on_ground_truth,
                                  record_outputs="fusion_node" if self.record_outputs else None)
        self.replay: subprocess.Popen | None = None
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    def _line(self, line: str) -> None:
        self._tail.append(line)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()
        if self.echo is not None and any(w in line for w in ("WARN", "ERROR", "FATAL", "[launch]")):
            self.echo(line)

    @property
    def node_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def start(self, timeout_s: float) -> str | None:
        """Start the graph and wait until fusion_node is warm and discovered; an error text on failure.

        fusion_node publishes /diagnostics only once active, and it activates only after its
        warm-up (every stage run once while configuring), so the first /diagnostics means warm.
        When outputs are recorded, also wait until this monitor has matched the node's output
        publishers, so the first bundles' outputs are not lost to discovery.

        First the page cache is flushed (`os.sync`): a bag just simulated, or a virtual environment
        just installed, is hundreds of MB of dirty pages that the kernel otherwise writes out during
        the drive's first seconds, on the same two cores, which the start-up latency would then
        measure instead of the node.
        """
        if hasattr(os, "sync"):
            os.sync()
        self.sup.start()
        deadline = time.monotonic() + timeout_s

        def ready() -> bool:
            return bool(self.monitor.latest) and self.monitor.outputs_discovered()

        while not ready() and time.monotonic() < deadline:
            self.monitor.spin_once(0.1)
            exited = {n: rc for n, rc in self.sup.returncodes.items() if rc is not None}
            if exited:
                where = f" (log: {self.log_path})" if self.log_path is not None else ""
                tail = "\n".join(f"  {line}" for line in self._tail)
                return (f"{', '.join(f'{n} exited with code {rc}' for n, rc in exited.items())} during start-up"
                        f"{where}; its last lines:\n{tail}")
        if not self.monitor.latest:
            return f"no /diagnostics from fusion_node within {timeout_s:g} s"
        if not self.monitor.outputs_discovered():
            topics = ", ".join(self.monitor.output_topics)
            return f"fusion_node's outputs ({topics}) not discovered within {timeout_s:g} s"
        self.warm_up_ms = self.monitor.latest.get("ros_fusion/fusion", {}).get("values", {}).get("warm_up_ms")
        return None

    def run_replay(self, on_tick: Callable[[RunMonitor], None] | None = None) -> int:
        """Replay the bag in real time (subprocess) while spinning the monitor; returns the replay's exit code."""
        cmd = [sys.executable, "-m", "ros_fusion.cli", "replay", str(self.bag), "--rate", str(self.rate),
               "--stamp-now", "--wait-subscribers", "20", "--delay", "1.0"]  # delay: let discovery settle
        self.replay = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while self.replay.poll() is None:
            self.monitor.spin_once(0.1)
            if on_tick is not None:
                on_tick(self.monitor)
        self.replay_output = self.replay.stdout.read() if self.replay.stdout else ""
        return int(self.replay.returncode)

    def settle(self, seconds: float) -> None:
        """Keep listening a little (the last outputs and one more diagnostics period)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.monitor.spin_once(0.1)

    def node_failed(self) -> dict[str, Any]:
        return {n: rc for n, rc in self.sup.returncodes.items() if rc not in (None, 0)}

    def close(self) -> None:
        if self.replay is not None and self.replay.poll() is None:
            self.replay.terminate()
        self.sup.stop()
        self.monitor.close()
        if self._log is not None:
            self._log.close()
