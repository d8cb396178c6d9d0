"""message_filters' Python `ApproximateTimeSynchronizer`, re-implemented for side-by-side studies.

Why: to show, on the same streams, that `core.sync` does better than what most
ROS 2 Python code uses. message_filters is not installable
from PyPI (and must not become a dependency), so its documented semantics are
written down here without ROS:

* one queue per input, keyed by header stamp (a second message with the same
  stamp replaces the first); when a queue holds more than `queue_size` stamps
  the oldest is discarded;
* on each arrival, the *new* message is the pivot: from every other queue the
  stamps within `slop` of it are taken, nearest first; the first combination
  (in that nearest-first product order) whose overall spread max − min is
  strictly below `slop` is emitted as a set and its messages are removed from
  their queues; other queued messages stay;
* no timeout, no partial sets, no drop accounting; with `allow_headerless`
  False (the default) a message without a stamp is ignored.

Times are int64 ns (slop too). The caller gets the sets returned by `add`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from typing import Any


@dataclass(frozen=True)
class ApproxSet:
    """One emitted set: stamp and payload per input, and when it was emitted (the completing arrival)."""

    stamps: dict[str, int]
    payloads: dict[str, Any]
    emitted_ns: int


@dataclass
class ApproximateTimeSynchronizer:
    """See module docstring. `names` fixes the inputs (their order is the callback's argument order)."""

    names: list[str]
    queue_size: int
    slop_ns: int
    allow_headerless: bool = False
    queues: dict[str, dict[int, Any]] = field(default_factory=dict)
    ignored_headerless: int = 0
    evicted: int = 0  # messages pushed out of a full queue (message_filters does not count them)

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.slop_ns < 0:
            raise ValueError(f"slop must be >= 0, got {self.slop_ns}")
        self.queues = {n: {} for n in self.names}

    def add(self, name: str, stamp_ns: int | None, recv_ns: int, payload: Any = None) -> list[ApproxSet]:
        """One message on input `name`; returns the set it completed (zero or one)."""
        if stamp_ns is None:
            if not self.allow_headerless:
                self.ignored_headerless += 1
                return []
            stamp_ns = recv_ns
        queue = self.queues[name]
        queue[stamp_ns] = payload
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self.evicted += 1
        others = [n for n in self.names if n != name]
        candidates: list[list[int]] = []
        for n in others:
            near = [(abs(s - stamp_ns), s) for s in self.queues[n] if abs(s - stamp_ns) <= self.slop_ns]
            if not near:
                return []
            near.sort()
            candidates.append([s for _, s in near])
        for combo in product(*candidates):
            stamps = dict(zip(others, combo, strict=True))
            stamps[name] = stamp_ns
            values = stamps.values()
            if max(values) - min(values) < self.slop_ns and all(
                s in self.queues[n] for n, s in stamps.items()
            ):
                payloads = {n: self.queues[n].pop(s) for n, s in stamps.items()}
                ordered = {n: stamps[n] for n in self.names}
                return [ApproxSet(ordered, {n: payloads[n] for n in self.names}, recv_ns)]
        return []
