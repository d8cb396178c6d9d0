"""`ros-fusion launch`'s supervisor: ordered start, prefixed logs, signals, fail-fast.

The supervised processes are small Python programs written by the test, so the
supervisor itself (the code under test) runs for real, with real processes and
real signals.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from ros_fusion.ros.node_plan import NodeSpec
from ros_fusion.ros.supervisor import Supervisor

CHILD = r'''
import os, signal, sys, time
node = [a.split(":=")[1] for a in sys.argv if a.startswith("__node:=")][0]
mode = os.environ.get("MODE_" + node, "run")
log = os.environ["LOG"]
with open(log, "a") as f:
    f.write(f"start {node} {time.monotonic()}\n")
def on_int(sig, frame):
    with open(log, "a") as f:
        f.write(f"sigint {node}\n")
    print(f"{node} got SIGINT", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, on_int)
print(f"hello from {node}", flush=True)
if mode == "fail":
    time.sleep(0.8)
    print("fatal: something broke", flush=True)
    sys.exit(3)
if mode == "fail_now":
    sys.exit(4)
while True:
    time.sleep(0.05)
'''


def _specs(tmp_path, names, modes):
    (tmp_path / "fake_node.py").write_text(CHILD)
    log = tmp_path / "log.txt"
    env = {"PYTHONPATH": str(tmp_path), "LOG": str(log)}
    env.update({f"MODE_{n}": m for n, m in modes.items()})
    specs = [NodeSpec("p", n, "fake_node", n, environment=env) for n in names]
    return specs, log


def _collect():
    lines: list[str] = []
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            lines.append(line)

    return lines, write


def test_ordered_start_prefixed_output_and_sigint_forwarding(tmp_path):
    specs, log = _specs(tmp_path, ["alpha", "beta"], {})
    lines, write = _collect()
    sup = Supervisor(specs, write=write, startup_grace_s=0.3)
    sup.start()
    time.sleep(0.5)
    assert all(rc is None for rc in sup.returncodes.values())
    sup.stop()
    assert sup.wait(timeout_s=10) == 0
    starts = [ln.split()[1] for ln in log.read_text().splitlines() if ln.startswith("start")]
    assert starts == ["alpha", "beta"]
    assert sorted(ln.split()[1] for ln in log.read_text().splitlines() if ln.startswith("sigint")) == ["alpha", "beta"]
    assert "[alpha] hello from alpha" in lines
    assert "[beta] beta got SIGINT" in lines


def test_one_node_failing_stops_the_others_and_sets_exit_code(tmp_path):
    specs, log = _specs(tmp_path, ["good", "bad"], {"bad": "fail"})
    lines, write = _collect()
    sup = Supervisor(specs, write=write)
    sup.start()
    rc = sup.wait(timeout_s=20)
    assert rc == 3
    assert sup.returncodes["good"] is not None  # stopped, not left running
    assert "sigint good" in log.read_text()
    assert any("bad died with exit code 3" in ln for ln in lines)
    assert "[bad] fatal: something broke" in lines


def test_failure_at_start_aborts_remaining_starts(tmp_path):
    specs, log = _specs(tmp_path, ["first", "second"], {"first": "fail_now"})
    lines, write = _collect()
    sup = Supervisor(specs, write=write, startup_grace_s=1.0)
    sup.start()
    assert sup.wait(timeout_s=10) == 4
    started = [ln.split()[1] for ln in log.read_text().splitlines() if ln.startswith("start")]
    assert started == ["first"]
    assert any("first failed at start" in ln for ln in lines)


def test_run_forwards_sigterm_from_outside(tmp_path):
    """`Supervisor.run` in a real subprocess: SIGTERM to it stops all nodes cleanly."""
    import subprocess

    specs, log = _specs(tmp_path, ["one", "two"], {})
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        "from ros_fusion.ros.node_plan import NodeSpec\n"
        "from ros_fusion.ros.supervisor import Supervisor\n"
        f"env = {specs[0].environment!r}\n"
        "specs = [NodeSpec('p', n, 'fake_node', n, environment=env) for n in ('one', 'two')]\n"
        "sys.exit(Supervisor(specs).run())\n"
    )
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, str(driver)], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("start") == 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "SIGTERM received" in out
    assert sorted(ln.split()[1] for ln in log.read_text().splitlines() if ln.startswith("sigint")) == ["one", "two"]
