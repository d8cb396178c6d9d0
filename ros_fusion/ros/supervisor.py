"""Pip-mode process supervisor: what `ros2 launch` does for us when it is absent.

Starts the node plan's nodes as processes in order, prefixes their output
with the node name, forwards SIGINT/SIGTERM, and stops everything when one
node dies with an error — the behaviour users know from launch_ros.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .node_plan import NodeSpec

#: How long a node gets to exit after SIGINT before SIGTERM, then SIGKILL.
STOP_GRACE_S = 5.0


def node_command(spec: NodeSpec, python: str = sys.executable) -> list[str]:
    """The command line that runs `spec` (same entry point as the installed executable)."""
    return [python, "-m", spec.module, *spec.ros_arguments()]


@dataclass
class _Child:
    spec: NodeSpec
    proc: subprocess.Popen
    reader: threading.Thread
    returncode: int | None = None


@dataclass
class Supervisor:
    specs: Sequence[NodeSpec]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    startup_grace_s: float = 0.3
    write: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    _children: list[_Child] = field(default_factory=list, init=False)
    _stopping: bool = field(default=False, init=False)
    _failed_rc: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _pump(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.write(f"[{name}] {line}")
        stream.close()

    def start(self) -> None:
        """Start nodes in plan order; a node that dies during its start-up grace aborts the rest."""
        for spec in self.specs:
            env = dict(os.environ)
            env.update(spec.environment)
            env.update(self.extra_env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
            cmd = node_command(spec, self.python)
            self.write(f"[launch] starting {spec.name}: {' '.join(cmd[:3])} ...")
            proc = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
            reader = threading.Thread(target=self._pump, args=(spec.name, proc.stdout), daemon=True)
            reader.start()
            self._children.append(_Child(spec, proc, reader))
            deadline = time.monotonic() + self.startup_grace_s
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            if proc.poll() is not None and proc.returncode != 0:
                self.write(f"[launch] {spec.name} failed at start (exit {proc.returncode}); stopping")
                self._failed_rc = proc.returncode
                self.stop()
                return

    def _signal_all(self, sig: int) -> None:
        for c in self._children:
            if c.proc.poll() is None:
                try:
                    os.killpg(c.proc.pid, sig)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """SIGINT everything, escalate to SIGTERM then SIGKILL after the grace period."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            self._signal_all(sig)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline and any(c.proc.poll() is None for c in self._children):
                time.sleep(0.05)
            if all(c.proc.poll() is not None for c in self._children):
                break
        for c in self._children:
            c.reader.join(timeout=1.0)

    def wait(self, timeout_s: float | None = None) -> int:
        """Block until all nodes exit (or one fails, or `timeout_s`); return the exit code to report."""
        worst = self._failed_rc
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            alive = False
            for c in self._children:
                rc = c.proc.poll()
                if rc is None:
                    alive = True
                    continue
                if c.returncode is None:
                    c.returncode = rc
                    if rc != 0 and not self._stopping:
                        self.write(f"[launch] {c.spec.name} died with exit code {rc}; stopping all nodes")
                        worst = rc
                        self.stop()
                    else:
                        self.write(f"[launch] {c.spec.name} exited ({rc})")
            if not alive:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.stop()
                break
            time.sleep(0.05)
        for c in self._children:
            c.reader.join(timeout=1.0)
        return worst

    @property
    def returncodes(self) -> dict[str, int | None]:
        return {c.spec.name: c.proc.poll() for c in self._children}

    def run(self) -> int:
        """Start, forward SIGINT/SIGTERM to the nodes, wait. What `ros-fusion launch` calls."""

        def forward(signum, _frame):
            self.write(f"[launch] {signal.Signals(signum).name} received, stopping nodes")
            threading.Thread(target=self.stop, daemon=True).start()

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            return self.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
