"""Rate-limited logging: one line per (topic, reason) per period, with a suppressed count.

Why: a sensor sending garbage at 100 Hz must not flood the log (docs/DESIGN.md §10 asks
for "one clear, rate-limited line"), yet the operator must learn how many were
hidden. rclpy's `throttle_duration_sec` throttles per call site, not per key,
and says nothing about what it swallowed — hence this helper. It takes any
logger with `.warning/.error/...` methods and a clock function, so tests drive
it without ROS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass
class _KeyState:
    last_ns: int
    suppressed: int = 0


class RateLimitedLogger:
    """Logs at most once per `period_s` per key; the next line reports how many were suppressed."""

    def __init__(
        self,
        logger: Any,
        period_s: float = 5.0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        max_keys: int = 4096,
    ) -> None:
        self._logger = logger
        self._period_ns = int(period_s * 1e9)
        self._clock_ns = clock_ns
        self._keys: dict[Hashable, _KeyState] = {}
        self._max_keys = max_keys  # bounded: keys come from untrusted data (reasons, topics)

    def log(self, level: str, key: Hashable, message: str) -> bool:
        """Log `message` at `level` ("debug", "info", "warning", "error", "fatal") unless `key` spoke recently.

        Returns True when a line was written.
        """
        now = self._clock_ns()
        st = self._keys.get(key)
        if st is not None and now - st.last_ns < self._period_ns:
            st.suppressed += 1
            return False
        suffix = ""
        if st is not None and st.suppressed:
            suffix = f" ({st.suppressed} similar suppressed in the last {(now - st.last_ns) / 1e9:.1f} s)"
        if st is None and len(self._keys) >= self._max_keys:
            self._keys.pop(next(iter(self._keys)))
        self._keys[key] = _KeyState(now)
        self._emit(level, message + suffix)
        return True

    def _emit(self, level: str, text: str) -> None:
        # One call site per severity: rclpy keys its logging context on the caller's
        # file/line and raises if one line logs at two severities.
        if level == "debug":
            self._logger.debug(text)
        elif level == "info":
            self._logger.info(text)
        elif level == "warning":
            self._logger.warning(text)
        elif level == "error":
            self._logger.error(text)
        else:
            self._logger.fatal(text)

    def warning(self, key: Hashable, message: str) -> bool:
        return self.log("warning", key, message)

    def error(self, key: Hashable, message: str) -> bool:
        return self.log("error", key, message)

    def suppressed(self, key: Hashable) -> int:
        st = self._keys.get(key)
        return st.suppressed if st else 0
