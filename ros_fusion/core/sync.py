"""Time synchronisation of any number of sensor streams into bundles (docs/DESIGN.md §6).

Why it is written this way, not as message_filters' ApproximateTime policy:
one late or dropped camera there throws whole sets away, there is no timeout,
no partial set and no account of what was dropped. Here fusion is *triggered*
by a reference sensor (default: the LiDAR) and, while the reference is silent,
by a watchdog at its nominal rate. For each trigger time ``T`` every other
stream contributes the message whose stamp is nearest ``T + offset`` within its
tolerance, and the bundle waits for a stream **only while a better match can
still arrive**, never past that stream's deadline. A bundle always goes out;
absent streams are in its ``missing`` set (the availability mask).

"Can a better match still arrive?" is answered from a stream model that needs
no clairvoyance: a message with stamp ``x`` is received at most ``L`` after
``x`` (``L``: the stream's largest latency, configured and learned online), and
two messages of one stream are never closer than ``min_spacing_fraction`` of
its period. So, given the stamps received so far, the stamps still possible
are ``x > now − L`` that keep that spacing from every received stamp; when none
of them is nearer ``T + offset`` than the current best, the choice is final.
In-order streams become final on the first message past ``T``; out-of-order
arrival is handled by the same rule.

All times are int64 nanoseconds. Receive times and ``now`` come from the
caller's clock (node clock, sim time or a bag's log time — the code never reads
a clock itself), stamps are capture times in the same time base. numpy-free on
the hot path on purpose: a bundle of 13 streams costs well under 0.2 ms.

Bad input never raises: each rejected message is counted per stream and
reason (`REJECT_REASONS`), each message thrown away after acceptance per
reason (`DROP_REASONS`), and resets (stamps jumping back, the clock jumping
back) per cause.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import NS_PER_S

#: Why `Synchroniser.add` refused a message (per-stream counter keys).
REJECT_REASONS: tuple[str, ...] = (
    "invalid",  # stamp or receive time not a finite integer number of ns (NaN, inf, str ...)
    "zero",  # stamp <= 0: never set by the driver
    "old",  # older than max_age relative to the receive time (1970 stamps, stuck clocks)
    "future",  # ahead of the receive time by more than max_future
    "duplicate",  # same stamp as a message already held (or the last one) for this stream
    "out_of_order",  # so old that no future bundle can use it any more (behind the buffer)
    "unknown_stream",  # a name the synchroniser was not configured with
)
#: Why an accepted message left the buffer without being used in a bundle.
DROP_REASONS: tuple[str, ...] = (
    "buffer_full",  # bounded buffer, oldest dropped
    "unmatched",  # never the best match of any bundle (e.g. a 15 Hz camera against a 10 Hz LiDAR)
    "reset",  # discarded by a reset (bag loop, clock jump)
)
TRIGGERS: tuple[str, ...] = ("reference", "watchdog")
#: Stream states reported in bundles and by `stream_state`.
STREAM_OK, STREAM_STALE, STREAM_MISSING = "OK", "STALE", "MISSING"

#: A stream's stamps may go back by this much (out-of-order arrival) before it
#: counts as a restarted source (bag loop) and the stream is reset.
DEFAULT_BACKWARDS_RESET_NS = 1 * NS_PER_S
#: The caller's clock going back by more than this resets everything (sim time restarted).
DEFAULT_CLOCK_JUMP_NS = 1 * NS_PER_S
#: Safety margin added to a stream's configured latency bound.
LATENCY_MARGIN_NS = 1_000_000
#: Decay of the learned latency bound per message (a spike is forgotten after ~100 messages).
LATENCY_DECAY = 0.98
#: Watchdog catch-up: after a long silence at most this many back-dated triggers are created.
MAX_WATCHDOG_CATCHUP = 3
#: Pending triggers above this are emitted with what they have (bounded memory under any input).
MAX_PENDING = 64
_FAR = 1 << 62


def _ms(value: float | None, default: int) -> int:
    return default if value is None else int(round(value * 1e6))


@dataclass(frozen=True)
class StreamConfig:
    """How one stream is matched. Durations in ns; `None` means "derive from rate and latency".

    offset_ns: expected ``stamp − T`` of this stream's best message (e.g. a camera
        exposed 40 ms before the LiDAR sweep ends: −40 ms).
    tolerance_ns: largest ``|stamp − (T + offset)|`` a member may have (default half a period).
    latency_ns / jitter_ns: nominal receive − stamp and its spread; the latency bound
        used for waiting is ``latency + 4 jitter + 1 ms``, raised online if messages
        arrive later than that.
    timeout_ns: longest wait for this stream after the trigger became known (default:
        just long enough for an on-time message within tolerance).
    stale_after_ns: no message for this long → the stream is STALE and is not waited for
        (default 3 periods, like `core.health`).
    buffer_size: messages held (default two seconds' worth, at least 8).
    """

    name: str
    rate_hz: float
    offset_ns: int = 0
    tolerance_ns: int | None = None
    latency_ns: int = 0
    jitter_ns: int = 0
    timeout_ns: int | None = None
    stale_after_ns: int | None = None
    buffer_size: int | None = None
    min_spacing_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"StreamConfig.name must be a non-empty string, got {self.name!r}")
        r = self.rate_hz
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
            raise ValueError(f"stream {self.name}: rate_hz must be a finite number > 0, got {r!r}")
        for key, minimum in (("offset_ns", None), ("tolerance_ns", 1), ("latency_ns", 0), ("jitter_ns", 0),
                             ("timeout_ns", 0), ("stale_after_ns", 1), ("buffer_size", 1)):
            v = getattr(self, key)
            if v is None and key not in ("offset_ns", "latency_ns", "jitter_ns"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"stream {self.name}: {key} must be an integer, got {v!r}")
            if minimum is not None and v < minimum:
                raise ValueError(f"stream {self.name}: {key} must be >= {minimum}, got {v!r}")
        f = self.min_spacing_fraction
        if not (isinstance(f, (int, float)) and 0.0 < f <= 1.0):
            raise ValueError(f"stream {self.name}: min_spacing_fraction must be in (0, 1], got {f!r}")

    @property
    def period_ns(self) -> int:
        return int(round(NS_PER_S / self.rate_hz))

    @property
    def tolerance(self) -> int:
        return self.tolerance_ns if self.tolerance_ns is not None else self.period_ns // 2

    @property
    def latency_bound_ns(self) -> int:
        """Configured bound on receive − stamp used to decide that nothing better can arrive."""
        return int(self.latency_ns) + 4 * int(self.jitter_ns) + LATENCY_MARGIN_NS

    @property
    def timeout(self) -> int:
        if self.timeout_ns is not None:
            return self.timeout_ns
        return self.latency_bound_ns + self.tolerance + max(0, int(self.offset_ns)) + 5_000_000

    @property
    def stale_after(self) -> int:
        return self.stale_after_ns if self.stale_after_ns is not None else 3 * self.period_ns

    @property
    def capacity(self) -> int:
        return self.buffer_size if self.buffer_size is not None else max(8, int(2.0 * self.rate_hz) + 4)

    @property
    def min_spacing_ns(self) -> int:
        return max(1, int(self.min_spacing_fraction * self.period_ns))

    @classmethod
    def from_ms(cls, name: str, rate_hz: float, *, offset_ms: float = 0.0, tolerance_ms: float | None = None,
                latency_ms: float = 0.0, jitter_ms: float = 0.0, timeout_ms: float | None = None,
                stale_after_ms: float | None = None, buffer_size: int | None = None) -> StreamConfig:
        """Same, in milliseconds (the rig file's unit)."""
        return cls(
            name=name, rate_hz=rate_hz, offset_ns=_ms(offset_ms, 0),
            tolerance_ns=None if tolerance_ms is None else max(1, _ms(tolerance_ms, 0)),
            latency_ns=_ms(latency_ms, 0), jitter_ns=_ms(jitter_ms, 0),
            timeout_ns=None if timeout_ms is None else _ms(timeout_ms, 0),
            stale_after_ns=None if stale_after_ms is None else max(1, _ms(stale_after_ms, 0)),
            buffer_size=buffer_size,
        )


@dataclass(frozen=True)
class Member:
    """One stream's message in a bundle. `age_ns` = T − stamp: how old the data is at the bundle time."""

    stamp_ns: int
    recv_ns: int
    payload: Any
    age_ns: int


@dataclass(frozen=True)
class Bundle:
    """What fusion gets for trigger time `t_ns`.

    members: the chosen message per present stream; missing: configured streams
    without a message (the availability mask is ``name in members``); stale:
    streams that were STALE/MISSING at emission (not waited for); wait_ns: how
    long the bundle waited after its trigger became known (the latency the
    synchroniser adds); epoch: increments at every reset, so consumers can tell
    a bag loop from time going backwards.
    """

    t_ns: int
    trigger: str
    members: dict[str, Member]
    missing: frozenset[str]
    wait_ns: int
    emitted_ns: int
    stale: frozenset[str] = frozenset()
    epoch: int = 0

    @property
    def available(self) -> dict[str, bool]:
        names = set(self.members) | set(self.missing)
        return {n: n in self.members for n in sorted(names)}


@dataclass
class _Stream:
    cfg: StreamConfig
    stamps: list[int] = field(default_factory=list)  # sorted
    msgs: dict[int, list[Any]] = field(default_factory=dict)  # stamp -> [recv, payload, used]
    last_recv: int | None = None
    first_recv: int | None = None
    max_stamp: int | None = None
    horizon: int = -_FAR  # stamps below can never be used again
    lat_obs: int = 0  # learned latency bound (decaying max)
    received: int = 0
    matched: int = 0
    rejected: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    resets: int = 0

    def __post_init__(self) -> None:
        c = self.cfg
        self.tol = c.tolerance
        self.offset = int(c.offset_ns)
        self.lat_cfg = c.latency_bound_ns
        self.timeout = c.timeout
        self.stale_after = c.stale_after
        self.capacity = c.capacity
        self.spacing = c.min_spacing_ns
        self.period = c.period_ns

    @property
    def latency(self) -> int:
        return self.lat_cfg if self.lat_cfg >= self.lat_obs else self.lat_obs

    def state(self, now: int) -> str:
        if self.last_recv is None:
            return STREAM_MISSING
        return STREAM_STALE if now - self.last_recv > self.stale_after else STREAM_OK

    def best(self, tau: int) -> int | None:
        """Stamp of the unused message nearest `tau` within tolerance (earlier wins a tie), or None."""
        stamps, msgs, tol = self.stamps, self.msgs, self.tol
        i = bisect_left(stamps, tau)
        left = right = None
        j = i - 1
        while j >= 0 and tau - stamps[j] <= tol:
            if not msgs[stamps[j]][2]:
                left = stamps[j]
                break
            j -= 1
        j = i
        n = len(stamps)
        while j < n and stamps[j] - tau <= tol:
            if not msgs[stamps[j]][2]:
                right = stamps[j]
                break
            j += 1
        if left is None:
            return right
        if right is None or tau - left <= right - tau:
            return left
        return right

    def clear(self, reason: str) -> None:
        for s in self.stamps:
            if not self.msgs[s][2]:
                self.dropped[reason] += 1
        self.stamps.clear()
        self.msgs.clear()
        self.max_stamp = None
        self.horizon = -_FAR


def open_interval_free(stamps: list[int], lo: int, hi: int, spacing: int) -> int | None:
    """Largest point of the open interval (lo, hi) farther than `spacing` from every stamp, or None.

    The region where a not-yet-received message could still have its stamp
    (stamps of one stream are at least `spacing` apart). Returns the supremum
    of that free set (None when it is empty) — the caller's wake-up time is
    derived from it.
    """
    if hi <= lo:
        return None
    a = bisect_left(stamps, lo - spacing)
    b = bisect_right(stamps, hi + spacing)
    cursor = lo  # everything <= cursor is known blocked (or outside)
    sup: int | None = None
    for k in range(a, b):
        y = stamps[k]
        if y - spacing > cursor:  # a gap (cursor, y - spacing)
            sup = min(y - spacing, hi)
        if y + spacing > cursor:
            cursor = y + spacing
        if cursor >= hi:
            return sup
    if cursor < hi:
        return hi
    return sup


@dataclass
class _Trigger:
    t_ns: int
    kind: str
    avail_ns: int
    final: set[str] = field(default_factory=set)
    wakes: dict[str, int] = field(default_factory=dict)  # per stream: when its decision can next change


def _as_ns(value: Any) -> int | None:
    """An int64-safe integer ns value, or None for NaN/inf/non-integers/bools/non-numbers."""
    if type(value) is int:  # the common case, first
        return value if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        v = int(value)
    elif isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f) or f != int(f):
            return None
        v = int(f)
    else:
        return None
    return v if -(1 << 63) <= v < (1 << 63) else None


class Synchroniser:
    """Reference-triggered, watchdog-backed, bounded synchroniser (see module docstring).

    Usage: for every message ``add(name, stamp_ns, recv_ns, payload)``; then, and
    periodically (a timer), ``poll(now_ns)`` → bundles whose decision is final,
    in time order. `next_wake_ns` tells when polling can next change anything.
    """

    def __init__(
        self,
        streams: Iterable[StreamConfig],
        reference: str,
        *,
        watchdog: bool = True,
        max_future_ns: int = NS_PER_S // 2,
        max_age_ns: int = 10 * NS_PER_S,
        backwards_reset_ns: int = DEFAULT_BACKWARDS_RESET_NS,
        clock_jump_ns: int = DEFAULT_CLOCK_JUMP_NS,
    ) -> None:
        self.streams: dict[str, _Stream] = {}
        for c in streams:
            if c.name in self.streams:
                raise ValueError(f"stream {c.name!r} configured twice")
            self.streams[c.name] = _Stream(c)
        if reference not in self.streams:
            raise ValueError(f"reference {reference!r} is not one of the streams {sorted(self.streams)}")
        self.reference = reference
        self.watchdog = bool(watchdog)
        self.max_future_ns = int(max_future_ns)
        self.max_age_ns = int(max_age_ns)
        self.backwards_reset_ns = int(backwards_reset_ns)
        self.clock_jump_ns = int(clock_jump_ns)
        self._ref = self.streams[reference]
        self._pending: deque[_Trigger] = deque()
        self._last_t: int | None = None  # newest trigger time created (pending or emitted)
        self._last_emitted_t: int | None = None
        self._first_recv: int | None = None
        self._last_now: int | None = None
        self._dirty = False  # a trigger was added: evaluate
        self._dirty_streams: set[str] = set()  # streams with new messages since the last evaluation
        self._wake = _FAR
        self._wd_due = _FAR  # cached `_watchdog_due()`
        self.epoch = 0
        self.bundles: Counter[str] = Counter()  # by trigger kind
        self.empty_watchdog = 0  # watchdog slots with no data at all (not emitted)
        self.watchdog_skipped = 0  # slots skipped after a long silence
        self.reference_late = 0  # reference messages whose slot the watchdog had already covered
        self.forced = 0  # bundles emitted early because too many were pending
        self.resets: Counter[str] = Counter()  # "stamps_backwards" | "clock_backwards"
        self.rejected_unknown = 0
        self.waits_ns: deque[int] = deque(maxlen=1024)  # recent added waits

    # --- input --------------------------------------------------------------------
    def add(self, name: str, stamp_ns: Any, recv_ns: Any, payload: Any = None) -> str | None:
        """Offer one message; returns the reject reason (also counted) or None when accepted. Never raises."""
        st = self.streams.get(name)
        if st is None:
            self.rejected_unknown += 1
            return "unknown_stream"
        if type(stamp_ns) is int and type(recv_ns) is int and -_FAR < stamp_ns < _FAR and -_FAR < recv_ns < _FAR:
            stamp, recv = stamp_ns, recv_ns  # fast path: plain ints well inside int64
        else:
            stamp, recv = _as_ns(stamp_ns), _as_ns(recv_ns)
        if stamp is None or recv is None:
            st.rejected["invalid"] += 1
            return "invalid"
        if stamp <= 0:
            st.rejected["zero"] += 1
            return "zero"
        if self._last_now is not None and recv < self._last_now - self.clock_jump_ns:
            self._reset_all("clock_backwards")
        if self._last_now is None or recv > self._last_now:
            self._last_now = recv
        if stamp - recv > self.max_future_ns:
            st.rejected["future"] += 1
            return "future"
        if recv - stamp > self.max_age_ns:
            st.rejected["old"] += 1
            return "old"
        if st.max_stamp is not None and stamp < st.max_stamp - self.backwards_reset_ns:
            # The source restarted (bag loop): its old buffer is meaningless now.
            if st is self._ref:
                self._reset_all("stamps_backwards")
            else:
                st.clear("reset")
                st.resets += 1
                self.resets["stamps_backwards"] += 1
        if stamp in st.msgs:
            st.rejected["duplicate"] += 1
            return "duplicate"
        if stamp < st.horizon:
            st.rejected["out_of_order"] += 1
            return "out_of_order"
        # accepted
        stamps = st.stamps
        if not stamps or stamp > stamps[-1]:
            stamps.append(stamp)
        else:
            insort(stamps, stamp)
        st.msgs[stamp] = [recv, payload, False]
        if len(stamps) > st.capacity:
            old = stamps.pop(0)
            if not st.msgs.pop(old)[2]:
                st.dropped["buffer_full"] += 1
            if old >= st.horizon:
                st.horizon = old + 1
        st.received += 1
        st.last_recv = recv
        if st.first_recv is None:
            st.first_recv = recv
        if self._first_recv is None:
            self._first_recv = recv
            self._wd_due = self._watchdog_due()
        if st.max_stamp is None or stamp > st.max_stamp:
            st.max_stamp = stamp
        lat = recv - stamp
        decayed = int(st.lat_obs * LATENCY_DECAY)
        st.lat_obs = lat if lat > decayed else decayed
        if st is self._ref:
            self._reference_arrived(stamp, recv)
            self._dirty = True
            self._wd_due = self._watchdog_due()
        self._dirty_streams.add(name)
        return None

    def _reference_arrived(self, stamp: int, recv: int) -> None:
        if self._last_t is None or stamp > self._last_t:
            # A late reference for a watchdog slot that is still pending takes that slot over.
            if self._pending and self._pending[-1].kind == "watchdog" and \
                    stamp - self._pending[-1].t_ns <= self._ref.period // 2:
                prev = self._pending[-2].t_ns if len(self._pending) > 1 else self._last_emitted_t
                if prev is None or stamp > prev:
                    trig = self._pending.pop()
                    self._pending.append(_Trigger(stamp, "reference", trig.avail_ns))
                    self._last_t = stamp
                    return
            self._pending.append(_Trigger(stamp, "reference", recv))
            self._last_t = stamp
        else:
            # Behind the newest trigger: it may still take over a pending watchdog slot near it
            # (keeping trigger order); otherwise the watchdog already covered its time.
            pend = self._pending
            for i, trig in enumerate(pend):
                if trig.kind != "watchdog" or abs(trig.t_ns - stamp) > self._ref.period // 2:
                    continue
                prev = pend[i - 1].t_ns if i > 0 else self._last_emitted_t
                nxt = pend[i + 1].t_ns if i + 1 < len(pend) else None
                if (prev is None or stamp > prev) and (nxt is None or stamp < nxt):
                    trig.kind = "reference"
                    trig.t_ns = stamp
                    trig.final.discard(self.reference)
                    if i + 1 == len(pend):
                        self._last_t = stamp
                    return
            self.reference_late += 1

    # --- resets -------------------------------------------------------------------
    def _reset_all(self, cause: str) -> None:
        for st in self.streams.values():
            st.clear("reset")
            st.resets += 1
        self._pending.clear()
        self._last_t = self._last_emitted_t = None
        self._first_recv = None
        self._last_now = None
        self._wake = _FAR
        self._wd_due = _FAR
        self.epoch += 1
        self.resets[cause] += 1

    # --- output -------------------------------------------------------------------
    def next_wake_ns(self) -> int:
        """Earliest time at which `poll` can emit without a new message (a huge number when never)."""
        w = self._wake if self._pending else _FAR
        if self._pending and (self._dirty or self._dirty_streams):
            return -_FAR
        return min(w, self._wd_due)

    def _watchdog_due(self) -> int:
        if not self.watchdog:
            return _FAR
        ref = self._ref
        if self._last_t is not None:
            base = self._last_t
        elif self._first_recv is not None:
            base = self._first_recv - ref.period
        else:
            return _FAR
        return base + ref.period + ref.latency + ref.period // 2

    def poll(self, now_ns: Any) -> list[Bundle]:
        """Bundles whose decision is final at `now_ns`, oldest first. Never raises on a bad clock value."""
        now = now_ns if type(now_ns) is int else _as_ns(now_ns)
        if now is None:
            return []
        if self._last_now is not None and now < self._last_now - self.clock_jump_ns:
            self._reset_all("clock_backwards")
        if self._last_now is None or now > self._last_now:
            self._last_now = now
        if now >= self._wd_due:
            self._watchdog(now)
            self._wd_due = self._watchdog_due()
        out: list[Bundle] = []
        if not self._pending:
            self._dirty_streams.clear()
            return out
        dirty = self._dirty_streams
        if not self._dirty and now < self._wake:
            head = self._pending[0]
            if dirty <= head.final:
                dirty.clear()
                return out
        self._dirty = False
        while self._pending:
            trig = self._pending[0]
            if len(self._pending) > MAX_PENDING:
                wake = None
                self.forced += 1
            else:
                wake = self._resolve(trig, now, dirty)
            if wake is not None:
                self._wake = wake
                break
            self._pending.popleft()
            b = self._emit(trig, now)
            if b is not None:
                out.append(b)
        else:
            self._wake = _FAR
        dirty.clear()
        return out

    def _watchdog(self, now: int) -> None:
        ref = self._ref
        grace = ref.latency + ref.period // 2
        base = self._last_t if self._last_t is not None else self._first_recv - ref.period  # type: ignore[operator]
        nxt = base + ref.period
        behind = (now - grace - nxt) // ref.period  # slots beyond the first that are also due
        if behind >= MAX_WATCHDOG_CATCHUP:
            skip = behind - MAX_WATCHDOG_CATCHUP + 1
            self.watchdog_skipped += skip
            nxt += skip * ref.period
        while nxt + grace <= now:
            self._pending.append(_Trigger(nxt, "watchdog", now))
            self._last_t = nxt
            nxt += ref.period
        self._dirty = True

    def _resolve(self, trig: _Trigger, now: int, dirty: set[str]) -> int | None:
        """None when every stream's choice for `trig` is final; else the time to look again.

        A stream's answer only changes when it gets a message (`dirty`) or when
        its cached wake-up time is reached, so only those are re-evaluated.
        """
        wake = _FAR
        final, wakes = trig.final, trig.wakes
        for name, st in self.streams.items():
            if name in final:
                continue
            if name == self.reference and trig.kind == "reference":
                final.add(name)
                continue
            w = wakes.get(name)
            if w is None or w <= now or name in dirty:
                w = self._stream_wake(st, trig, now)
                if w is not None:
                    wakes[name] = w
            if w is None:
                trig.final.add(name)
            elif w < wake:
                wake = w
        return None if wake == _FAR else wake

    def _stream_wake(self, st: _Stream, trig: _Trigger, now: int) -> int | None:
        """None when this stream's best match for `trig` is certain (or its deadline passed)."""
        if st.last_recv is None:
            # Never seen: waited for only during start-up (the first `stale_after` after the
            # first message of any stream), so a sensor that is simply absent costs nothing.
            if self._first_recv is None or now - self._first_recv > st.stale_after:
                return None
            last = self._first_recv
        elif now - st.last_recv > st.stale_after:
            return None  # STALE: not waited for
        else:
            last = st.last_recv
        deadline = trig.avail_ns + st.timeout
        if now >= deadline:
            return None
        tau = trig.t_ns + st.offset
        best = st.best(tau)
        lat = st.latency
        if best is None:
            lo, hi = tau - st.tol - 1, tau + st.tol + 1
        else:
            d = abs(best - tau)
            lo, hi = tau - d, tau + d
        lo = max(lo, now - lat)
        sup = open_interval_free(st.stamps, lo, hi, st.spacing)
        if sup is None:
            return None
        wake = sup + lat
        stale_at = last + st.stale_after + 1
        return min(wake, deadline, stale_at)

    def _emit(self, trig: _Trigger, now: int) -> Bundle | None:
        members: dict[str, Member] = {}
        missing: set[str] = set()
        stale: set[str] = set()
        t = trig.t_ns
        for name, st in self.streams.items():
            if st.state(now) != STREAM_OK:
                stale.add(name)
            tau = t + st.offset
            if name == self.reference and trig.kind == "reference":
                s = t if t in st.msgs and not st.msgs[t][2] else None
            else:
                s = st.best(tau)
            if s is None:
                missing.add(name)
                continue
            m = st.msgs[s]
            m[2] = True
            members[name] = Member(s, m[0], m[1], t - s)
        for st in self.streams.values():
            self._prune(st, t)
        self._last_emitted_t = t
        if trig.kind == "watchdog" and not members:
            self.empty_watchdog += 1
            return None
        for name in members:
            self.streams[name].matched += 1
        wait = now - trig.avail_ns
        self.bundles[trig.kind] += 1
        self.waits_ns.append(wait)
        return Bundle(t, trig.kind, members, frozenset(missing), wait, now, frozenset(stale), self.epoch)

    def _prune(self, st: _Stream, t: int) -> None:
        """Forget messages no later bundle can use (or need as spacing evidence)."""
        h = t + st.offset - st.tol
        if h > st.horizon:
            st.horizon = h
        cut = bisect_left(st.stamps, h - st.spacing)
        if cut:
            for s in st.stamps[:cut]:
                if not st.msgs.pop(s)[2]:
                    st.dropped["unmatched"] += 1
            del st.stamps[:cut]

    # --- inspection -----------------------------------------------------------------
    def stream_state(self, name: str, now_ns: int) -> str:
        """OK / STALE (nothing for `stale_after`) / MISSING (never received)."""
        return self.streams[name].state(int(now_ns))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics and `info --sync` (plain types)."""
        total = sum(self.bundles.values())
        waits = np.array(self.waits_ns, dtype=np.float64) / 1e6 if self.waits_ns else np.zeros(0)
        out: dict[str, Any] = {
            "bundles": total,
            "bundles_reference": self.bundles["reference"],
            "bundles_watchdog": self.bundles["watchdog"],
            "wait_ms_p50": float(np.percentile(waits, 50)) if waits.size else 0.0,
            "wait_ms_p99": float(np.percentile(waits, 99)) if waits.size else 0.0,
            "wait_ms_max": float(waits.max()) if waits.size else 0.0,
            "resets": sum(self.resets.values()),
            "epoch": self.epoch,
            "reference_late": self.reference_late,
            "watchdog_skipped": self.watchdog_skipped,
            "empty_watchdog": self.empty_watchdog,
            "rejected_unknown_stream": self.rejected_unknown,
            "streams": {},
        }
        for name, st in self.streams.items():
            out["streams"][name] = {
                "received": st.received,
                "matched": st.matched,
                "matched_pct": 100.0 * st.matched / total if total else 0.0,
                "rejected": dict(st.rejected),
                "dropped": dict(st.dropped),
                "latency_bound_ms": st.latency / 1e6,
                "buffered": len(st.stamps),
            }
        return out


def stream_configs_from_rig(rig: Any, stale_timeout_factor: float = 3.0) -> list[StreamConfig]:
    """One `StreamConfig` per rig sensor: rate/latency/jitter from the rig, `sync:` keys where given.

    `rig` is a `core.rig.Rig`; its sensors' optional ``sync`` mapping holds
    ``offset_ms``, ``tolerance_ms``, ``timeout_ms``, ``buffer_size`` (validated by the rig loader).
    """
    out = []
    for s in rig.sensors.values():
        sync = dict(getattr(s, "sync", {}) or {})
        out.append(StreamConfig.from_ms(
            s.name, s.rate_hz,
            offset_ms=float(sync.get("offset_ms", 0.0)),
            tolerance_ms=sync.get("tolerance_ms"),
            latency_ms=s.latency_s * 1e3,
            jitter_ms=s.jitter_s * 1e3,
            timeout_ms=sync.get("timeout_ms"),
            stale_after_ms=stale_timeout_factor * 1e3 / s.rate_hz,
            buffer_size=None if sync.get("buffer_size") is None else int(sync["buffer_size"]),
        ))
    return out


def default_reference(rig: Any) -> str:
    """The first LiDAR of the rig, else the first camera/radar, else the first sensor."""
    by_mod: dict[str, list[str]] = {}
    for s in rig.sensors.values():
        by_mod.setdefault(getattr(s.modality, "value", str(s.modality)), []).append(s.name)
    for m in ("lidar", "camera", "radar"):
        if by_mod.get(m):
            return by_mod[m][0]
    return next(iter(rig.sensors))


def describe_bundle(b: Bundle) -> str:
    """One log line: which sensors made it and their ages (T − stamp, ms), which are missing, the added wait."""
    parts = [f"{n} {m.age_ns / 1e6:+.1f}ms" for n, m in b.members.items()]
    text = f"bundle T={b.t_ns / 1e9:.3f} ({b.trigger}, waited {b.wait_ns / 1e6:.1f} ms): " + ", ".join(parts)
    if b.missing:
        text += "; missing " + ", ".join(sorted(b.missing))
    if b.stale:
        text += " (stale: " + ", ".join(sorted(b.stale)) + ")"
    return text


class BundleStats:
    """Running statistics of emitted bundles (what diagnostics and `info --sync` report).

    Totals since start plus a bounded window of recent bundles for
    percentiles, so a long drive cannot grow memory.
    """

    def __init__(self, names: Iterable[str], window: int = 600) -> None:
        self.names = list(names)
        self.total = 0
        self.by_trigger: Counter[str] = Counter()
        self.matched: Counter[str] = Counter()
        self.waits_ms: deque[float] = deque(maxlen=window)
        self.ages_ms: dict[str, deque[float]] = {n: deque(maxlen=window) for n in self.names}
        self.last: Bundle | None = None

    def add(self, b: Bundle) -> None:
        self.total += 1
        self.by_trigger[b.trigger] += 1
        self.waits_ms.append(b.wait_ns / 1e6)
        for n, m in b.members.items():
            self.matched[n] += 1
            if n in self.ages_ms:
                self.ages_ms[n].append(m.age_ns / 1e6)
        self.last = b

    def summary(self) -> dict[str, Any]:
        w = np.array(self.waits_ms, dtype=np.float64)
        out: dict[str, Any] = {
            "bundles": self.total,
            "bundles_reference": self.by_trigger["reference"],
            "bundles_watchdog": self.by_trigger["watchdog"],
            "wait_ms_p50": float(np.percentile(w, 50)) if w.size else 0.0,
            "wait_ms_p99": float(np.percentile(w, 99)) if w.size else 0.0,
            "wait_ms_max": float(w.max()) if w.size else 0.0,
            "sensors": {},
        }
        for n in self.names:
            a = np.abs(np.array(self.ages_ms[n], dtype=np.float64))
            out["sensors"][n] = {
                "matched": self.matched[n],
                "matched_pct": 100.0 * self.matched[n] / self.total if self.total else 0.0,
                "age_ms_p50": float(np.percentile(a, 50)) if a.size else None,
                "age_ms_max": float(a.max()) if a.size else None,
            }
        return out
