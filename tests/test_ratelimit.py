"""Rate-limited logging: one line per key per period, suppressed count reported."""

from __future__ import annotations

import pytest

from ros_fusion.ros.ratelimit import RateLimitedLogger


class _Lines:
    """Collects log lines like an rclpy logger would print them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))

    def error(self, msg: str) -> None:
        self.lines.append(("error", msg))


def test_once_per_period_per_key_with_suppressed_count() -> None:
    now = [0]
    sink = _Lines()
    log = RateLimitedLogger(sink, period_s=5.0, clock_ns=lambda: now[0])
    for i in range(100):  # 100 Hz of garbage for 1 s on one topic
        now[0] = i * 10_000_000
        log.warning(("/lidar", "truncated"), "/lidar: rejected data: truncated")
    assert sink.lines == [("warning", "/lidar: rejected data: truncated")]
    assert log.suppressed(("/lidar", "truncated")) == 99
    # Another key is independent.
    assert log.error(("/lidar", "nan"), "/lidar: nan")
    assert sink.lines[-1] == ("error", "/lidar: nan")
    # After the period the next line carries the suppressed count and resets it.
    now[0] = 6_000_000_000
    assert log.warning(("/lidar", "truncated"), "/lidar: rejected data: truncated")
    assert sink.lines[-1][1].startswith("/lidar: rejected data: truncated (99 similar suppressed in the last 6.0 s)")
    assert log.suppressed(("/lidar", "truncated")) == 0
    assert len(sink.lines) == 3


def test_keys_are_bounded() -> None:
    sink = _Lines()
    log = RateLimitedLogger(sink, period_s=5.0, clock_ns=lambda: 0, max_keys=8)
    for i in range(50):
        log.warning(("/t", f"reason{i}"), f"r{i}")
    assert len(sink.lines) == 50
    assert len(log._keys) == 8


def test_works_with_an_rclpy_logger_at_several_levels() -> None:
    rclpy_logging = pytest.importorskip("rclpy.logging")
    log = RateLimitedLogger(rclpy_logging.get_logger("ratelimit_test"), period_s=0.0)
    # rclpy raises if one call site logs at two severities; every level must still work.
    for level in ("debug", "info", "warning", "error", "fatal", "warning"):
        assert log.log(level, ("/t", level), f"line at {level}")
