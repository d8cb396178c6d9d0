"""Per-sensor health: rate, age, jitter, drop/reject counts and OK/STALE/MISSING.

Why it lives in `core`: the live node, the offline evaluator and the future
pipeline (which picks intermediate / late / degraded fusion from it, docs/DESIGN.md §8)
must judge sensor health the same way, and tests must be able to drive it with
synthetic arrival times without ROS. Everything here is stdlib + numpy; all
times are int64 nanoseconds from one clock chosen by the caller (the node's
clock for receive times, header stamps for capture times).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum

import numpy as np

from .rig import Rig
from .types import NS_PER_S

#: Reject reasons produced by `check_stamp` (diagnostic counter keys).
STAMP_REASONS: tuple[str, ...] = (
    "stamp_invalid", "stamp_zero", "stamp_future", "stamp_old", "stamp_backwards", "stamp_duplicate",
)
#: A rate below this fraction of nominal degrades an OK sensor to WARN.
LOW_RATE_FRACTION = 0.5
#: Consecutive backwards stamps after which the clock is taken to have jumped
#: back (bag loop, replay restart) and the stream is re-anchored instead of
#: being rejected forever (docs/DESIGN.md §6: "reset or reject, counted").
BACKWARDS_RESET_COUNT = 3


#: state changes each sensor remembers for diagnostics (at 1 Hz diagnostics, a few per message at most)
TRANSITIONS_KEPT = 8


class SensorState(str, Enum):
    """Availability of one sensor; the value is what diagnostics print."""

    OK = "OK"
    STALE = "STALE"
    MISSING = "MISSING"


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels, kept here so core need not import ROS."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


def check_stamp(
    stamp_ns: int | float,
    now_ns: int,
    last_stamp_ns: int | None,
    max_future_ns: int,
    max_age_ns: int,
) -> str | None:
    """Return why a header stamp is unacceptable, or None if it is fine.

    Checked in order of how much they say about the source: a stamp that is not
    a finite integer (`stamp_invalid`, e.g. a NaN that leaked through a float
    conversion), zero or negative (`stamp_zero`: driver never set it, or an
    int64 cast of NaN), ahead of the clock by more than `max_future_ns`
    (`stamp_future`), older than `max_age_ns` (`stamp_old`, includes 1970
    stamps from an unset clock), equal to the previous accepted stamp of this
    stream (`stamp_duplicate`) or before it (`stamp_backwards`).
    """
    if isinstance(stamp_ns, bool):
        return "stamp_invalid"
    if isinstance(stamp_ns, (float, np.floating)):
        if not math.isfinite(float(stamp_ns)) or float(stamp_ns) != int(stamp_ns):
            return "stamp_invalid"
        stamp_ns = int(stamp_ns)
    elif not isinstance(stamp_ns, (int, np.integer)):
        return "stamp_invalid"
    stamp = int(stamp_ns)
    if stamp <= 0:
        return "stamp_zero"
    if stamp - now_ns > max_future_ns:
        return "stamp_future"
    if now_ns - stamp > max_age_ns:
        return "stamp_old"
    if last_stamp_ns is not None:
        if stamp == last_stamp_ns:
            return "stamp_duplicate"
        if stamp < last_stamp_ns:
            return "stamp_backwards"
    return None


@dataclass(frozen=True)
class HealthConfig:
    """How one sensor is judged. `rate_hz` is the nominal rate from the rig."""

    name: str
    modality: str
    rate_hz: float
    stale_timeout_factor: float = 3.0
    missing_timeout_s: float = 5.0
    rate_window_s: float = 5.0
    frame_id: str = ""
    #: A message whose digest equals its predecessor's repeats it; after this many repeats in a
    #: row the data is FROZEN (a driver re-publishing its last buffer with fresh stamps).
    frozen_repeats: int = 3
    #: Hysteresis: after being STALE/MISSING/frozen, this many healthy messages in a row
    #: (each within the stale timeout of the previous one, not frozen) before OK again.
    recover_count: int = 3

    def __post_init__(self) -> None:
        for key in ("rate_hz", "stale_timeout_factor", "missing_timeout_s", "rate_window_s"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"HealthConfig.{key} must be a finite number > 0, got {v!r}")
        for key in ("frozen_repeats", "recover_count"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"HealthConfig.{key} must be an integer >= 1, got {v!r}")

    @property
    def stale_timeout_ns(self) -> int:
        return int(self.stale_timeout_factor * NS_PER_S / self.rate_hz)

    @property
    def missing_timeout_ns(self) -> int:
        return int(self.missing_timeout_s * NS_PER_S)


@dataclass(frozen=True)
class SensorSnapshot:
    """What one sensor looked like at `now_ns`; plain data for diagnostics and the pipeline."""

    name: str
    modality: str
    frame_id: str
    now_ns: int
    state: SensorState
    level: Level
    message: str
    rate_hz: float
    nominal_rate_hz: float
    age_ms_mean: float
    age_ms_max: float
    jitter_ms: float
    received: int
    rejected: dict[str, int]
    dropped: dict[str, int]
    points_dropped: dict[str, int]
    last_stamp_ns: int | None
    last_recv_ns: int | None
    silent_s: float | None
    stamp_resets: int = 0
    frozen: bool = False  # the latest payloads are identical (frozen-data detection)
    frozen_messages: int = 0  # accepted messages that repeated their predecessor's payload, all time
    frozen_episodes: int = 0  # how often the stream froze
    recovering: bool = False  # data is back but not yet `recover_count` healthy messages
    #: Accepted messages whose content contradicted the rig (e.g. intensity scale), per check, all time.
    warned: dict[str, int] = field(default_factory=dict)
    #: What the latest checked message contradicted (None: it passed): a warning, data still used.
    input_warning: str | None = None
    #: the last state changes, oldest first: (now_ns of the update that made it, new state value)
    transitions: tuple[tuple[int, str], ...] = ()

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def usable(self) -> bool:
        """Fresh enough for fusion (OK state; a low rate is a warning, not a loss)."""
        return self.state is SensorState.OK


class SensorHealth:
    """Running health statistics of one sensor stream.

    Arrivals are kept in a bounded deque covering `rate_window_s` (capped in
    length so a sensor flooding at 100× its rate cannot grow memory), which is
    all rate, jitter and age need.
    """

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        cap = int(config.rate_hz * config.rate_window_s * 4) + 16
        self._arrivals: deque[tuple[int, int]] = deque(maxlen=min(cap, 100_000))  # (recv_ns, age_ns)
        self.received = 0
        self.rejected: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        # Points removed from otherwise accepted clouds (e.g. NaN/Inf xyz): counted
        # apart from whole dropped messages so neither number hides the other.
        self.points_dropped: Counter[str] = Counter()
        self.last_stamp_ns: int | None = None
        self.last_recv_ns: int | None = None
        self.last_digest: bytes | None = None
        self.state = SensorState.MISSING
        self.stamp_resets = 0
        self._backwards_run = 0
        self.frozen = False
        self.frozen_messages = 0
        self.frozen_episodes = 0
        self._repeat_run = 0  # messages in a row that repeated their predecessor's digest
        self._healthy_run = 0  # healthy messages in a row (hysteresis)
        self._degraded = False  # was STALE/MISSING/frozen after having data: hysteresis applies
        self.warned: Counter[str] = Counter()
        self._input_warnings: dict[str, str] = {}  # check → what the last message of that check contradicted
        # State changes with their times, so a reader polling every second (diagnostics) still
        # learns of a STALE that lasted less than a second.
        self.transitions: deque[tuple[int, SensorState]] = deque(maxlen=TRANSITIONS_KEPT)

    # --- events -------------------------------------------------------------
    def on_input_check(self, check: str, problem: str | None) -> None:
        """The outcome of a content check on an accepted message: `problem` names what contradicts the rig
        (counted under `check`, kept as the sensor's warning until a message passes), None = it passed."""
        if problem is not None:
            self.warned[check] += 1
            self._input_warnings[check] = problem
        else:
            self._input_warnings.pop(check, None)

    @property
    def input_warning(self) -> str | None:
        """Every content check the last messages failed, joined (None: all passed)."""
        return "; ".join(self._input_warnings.values()) or None

    def on_message(self, stamp_ns: int, recv_ns: int, digest: bytes | None = None) -> None:
        """An accepted message. `digest`: a cheap hash of the payload (None: not checked, e.g. empty data).

        Identical digests in a row mark the stream frozen after `frozen_repeats`
        repeats; a message arriving later than the stale timeout after the
        previous one restarts the healthy run used for hysteresis.
        """
        recv = int(recv_ns)
        if digest is not None and digest == self.last_digest:
            self._repeat_run += 1
            self.frozen_messages += 1
        else:
            self._repeat_run = 0
        was_frozen = self.frozen
        self.frozen = self._repeat_run >= self.config.frozen_repeats
        if self.frozen and not was_frozen:
            self.frozen_episodes += 1
        if self.frozen:
            self._healthy_run = 0
            self._degraded = True
        elif self.last_recv_ns is None:
            self._healthy_run = 1
        elif recv - self.last_recv_ns > self.config.stale_timeout_ns:
            self._healthy_run = 1
            self._degraded = True
        else:
            self._healthy_run += 1
        self.received += 1
        self.last_stamp_ns = int(stamp_ns)
        self.last_recv_ns = recv
        self.last_digest = digest
        self._backwards_run = 0
        self._arrivals.append((recv, recv - int(stamp_ns)))

    def on_reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def on_drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def on_points_dropped(self, reason: str, n: int) -> None:
        if n > 0:
            self.points_dropped[reason] += int(n)

    def accept_stamp(self, stamp_ns: int, now_ns: int, max_future_ns: int, max_age_ns: int) -> str | None:
        """`check_stamp` against this stream's last stamp, with a reset on a clock jump.

        A single backwards stamp is an out-of-order message and is rejected; a
        run of `BACKWARDS_RESET_COUNT` means the source restarted (bag loop), so
        the stream re-anchors on the new stamp (counted in `stamp_resets`)
        rather than rejecting every message from then on. The caller counts a
        returned reason with `on_reject`.
        """
        reason = check_stamp(stamp_ns, now_ns, self.last_stamp_ns, max_future_ns, max_age_ns)
        if reason == "stamp_backwards":
            self._backwards_run += 1
            if self._backwards_run >= BACKWARDS_RESET_COUNT:
                self._backwards_run = 0
                self.stamp_resets += 1
                self.last_stamp_ns = None
                return None
        elif reason is None:
            self._backwards_run = 0
        return reason

    # --- evaluation ---------------------------------------------------------
    def _window(self, now_ns: int) -> list[tuple[int, int]]:
        start = now_ns - int(self.config.rate_window_s * NS_PER_S)
        while self._arrivals and self._arrivals[0][0] < start:
            self._arrivals.popleft()
        return list(self._arrivals)

    def update(self, now_ns: int) -> SensorState:
        """Re-evaluate the state at `now_ns` (call periodically; state is sticky between calls).

        MISSING / STALE from silence; STALE while frozen; back to OK straight away
        the first time data arrives, but after a degradation only once
        `recover_count` healthy messages arrived in a row (hysteresis, so a
        flickering sensor does not flip the fusion mode every period).
        """
        before = self.state
        if self.last_recv_ns is None:
            self.state = SensorState.MISSING
            return self.state
        silent = now_ns - self.last_recv_ns
        if silent > self.config.missing_timeout_ns:
            self.state = SensorState.MISSING
            self._degraded = True
        elif silent > self.config.stale_timeout_ns or self.frozen:
            self.state = SensorState.STALE
            self._degraded = True
        elif not self._degraded or self._healthy_run >= self.config.recover_count:
            self.state = SensorState.OK
            self._degraded = False
        else:
            self.state = SensorState.STALE  # recovering
        if self.state is not before:
            self.transitions.append((int(now_ns), self.state))
        return self.state

    @property
    def recovering(self) -> bool:
        """Data flows again (not frozen, not silent) but the hysteresis still holds the state at STALE."""
        return (self.state is SensorState.STALE and not self.frozen and self._degraded
                and 0 < self._healthy_run < self.config.recover_count)

    def rate_hz(self, now_ns: int) -> float:
        """Arrival rate over the window: (n−1) intervals over their span; 0 with fewer than 2 arrivals."""
        w = self._window(now_ns)
        if len(w) < 2:
            return 0.0
        span = w[-1][0] - w[0][0]
        return (len(w) - 1) * NS_PER_S / span if span > 0 else 0.0

    def snapshot(self, now_ns: int) -> SensorSnapshot:
        state = self.update(now_ns)
        w = self._window(now_ns)
        rate = 0.0
        jitter_ms = 0.0
        age_mean = age_max = 0.0
        if w:
            arr = np.array(w, dtype=np.int64)
            ages = arr[:, 1].astype(np.float64) / 1e6
            age_mean, age_max = float(ages.mean()), float(ages.max())
            if len(arr) >= 2:
                dt = np.diff(arr[:, 0]).astype(np.float64)
                span = float(arr[-1, 0] - arr[0, 0])
                rate = (len(arr) - 1) * NS_PER_S / span if span > 0 else 0.0
                jitter_ms = float(dt.std() / 1e6) if len(dt) >= 2 else 0.0
        silent_s = None if self.last_recv_ns is None else (now_ns - self.last_recv_ns) / NS_PER_S
        nominal = float(self.config.rate_hz)
        level, message = _level_and_message(state, rate, nominal, silent_s, len(w))
        if state is SensorState.STALE and self.frozen:
            message = f"STALE: frozen data ({self._repeat_run + 1} identical messages in a row)"
        elif self.recovering and silent_s is not None and silent_s * NS_PER_S <= self.config.stale_timeout_ns:
            message = f"STALE: recovering ({self._healthy_run}/{self.config.recover_count} healthy messages)"
        if state is SensorState.OK and self.input_warning is not None:
            level, message = max(level, Level.WARN), f"{message}; {self.input_warning}"
        return SensorSnapshot(
            name=self.config.name,
            modality=self.config.modality,
            frame_id=self.config.frame_id,
            now_ns=int(now_ns),
            state=state,
            level=level,
            message=message,
            rate_hz=rate,
            nominal_rate_hz=nominal,
            age_ms_mean=age_mean,
            age_ms_max=age_max,
            jitter_ms=jitter_ms,
            received=self.received,
            rejected=dict(self.rejected),
            dropped=dict(self.dropped),
            points_dropped=dict(self.points_dropped),
            last_stamp_ns=self.last_stamp_ns,
            last_recv_ns=self.last_recv_ns,
            silent_s=silent_s,
            stamp_resets=self.stamp_resets,
            frozen=self.frozen,
            frozen_messages=self.frozen_messages,
            frozen_episodes=self.frozen_episodes,
            recovering=self.recovering,
            warned=dict(self.warned),
            input_warning=self.input_warning,
            transitions=tuple((t, st.value) for t, st in self.transitions),
        )


def _level_and_message(
    state: SensorState, rate: float, nominal: float, silent_s: float | None, n_window: int
) -> tuple[Level, str]:
    if state is SensorState.MISSING:
        if silent_s is None:
            return Level.ERROR, "MISSING: never received"
        return Level.ERROR, f"MISSING: no data for {silent_s:.1f} s"
    if state is SensorState.STALE:
        return Level.WARN, f"STALE: no data for {silent_s:.1f} s"
    # A rate needs at least two arrivals; right after the first message it is unknown, not low.
    if n_window >= 2 and rate < LOW_RATE_FRACTION * nominal:
        return Level.WARN, f"LOW RATE: {rate:.1f} Hz < {LOW_RATE_FRACTION:.0%} of {nominal:.1f} Hz"
    return Level.OK, f"OK {rate:.1f} Hz"


@dataclass(frozen=True)
class HealthSnapshot:
    """All sensors at one instant: what diagnostics publish and the pipeline chooses a fusion mode from."""

    now_ns: int
    sensors: dict[str, SensorSnapshot] = field(default_factory=dict)

    def usable(self, modality: str | None = None) -> list[str]:
        """Names of sensors in OK state (optionally of one modality)."""
        return [
            s.name for s in self.sensors.values() if s.usable and (modality is None or s.modality == modality)
        ]

    def modalities_usable(self) -> set[str]:
        return {s.modality for s in self.sensors.values() if s.usable}

    @property
    def worst_level(self) -> Level:
        return max((s.level for s in self.sensors.values()), default=Level.OK)


class HealthMonitor:
    """The `SensorHealth` of every sensor of the rig, addressed by sensor name."""

    def __init__(self, configs: list[HealthConfig] | tuple[HealthConfig, ...] = ()) -> None:
        self.sensors: dict[str, SensorHealth] = {}
        for c in configs:
            self.add(c)

    def add(self, config: HealthConfig) -> SensorHealth:
        if config.name in self.sensors:
            raise ValueError(f"sensor {config.name!r} is already monitored")
        h = SensorHealth(config)
        self.sensors[config.name] = h
        return h

    def __getitem__(self, name: str) -> SensorHealth:
        return self.sensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.sensors

    def snapshot(self, now_ns: int) -> HealthSnapshot:
        return HealthSnapshot(int(now_ns), {n: h.snapshot(now_ns) for n, h in self.sensors.items()})


def health_configs_from_rig(
    rig: Rig, stale_timeout_factor: float = 3.0, missing_timeout_s: float = 5.0, rate_window_s: float = 5.0,
    frozen_repeats: int = 3, recover_count: int = 3,
) -> list[HealthConfig]:
    """One `HealthConfig` per rig sensor, nominal rate and frame from the rig file."""
    return [
        HealthConfig(
            name=s.name,
            modality=s.modality.value,
            rate_hz=s.rate_hz,
            stale_timeout_factor=stale_timeout_factor,
            missing_timeout_s=missing_timeout_s,
            rate_window_s=rate_window_s,
            frame_id=s.frame_id,
            frozen_repeats=frozen_repeats,
            recover_count=recover_count,
        )
        for s in rig.sensors.values()
    ]
