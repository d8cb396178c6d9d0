"""Synchroniser study: `core.sync` vs an offline optimum and vs message_filters' ApproximateTime.

    python -m ros_fusion.eval.sync_study [--seeds 100 101 102] [--duration 60] [--json out.json]

Why a study and not only unit tests: "as good as possible" needs a yardstick.

* **Offline optimum** — with every message of the drive known, each bundle's
  best member per stream is the unused message nearest ``T + offset`` within
  tolerance (bundles in time order, no message used twice). We count how many
  online bundles are identical to it.
* **Minimum necessary wait** — an online synchroniser cannot know the optimum
  is optimal before (a) the optimal message has arrived and (b) the arrivals
  so far exclude anything better. (b) needs a model of the streams; we use the
  weakest one that makes waiting finite and that the generator below obeys:
  receive − stamp ≤ L (the stream's latency bound) and two stamps of one
  stream are ≥ half a period apart. The minimum necessary wait of a bundle is
  the latest over its streams of the earliest instant at which (a) and (b)
  hold, minus the time the trigger became known. It is computed here by a
  separate scan over the full arrival list, not by asking the synchroniser.
  The "oracle" bound — arrival of the optimal message alone, ignoring (b) — is
  reported too; nothing causal can reach it.
* **ApproximateTime** — `eval.approximate_time`, same streams, queue_size 10
  and slop = the largest of our tolerances (a typical configuration): sets
  emitted, reference frames without a set when the camera drops 10/50/100 %
  of its frames, added latency (set emission − LiDAR arrival).

Streams are synthetic so that stamps, latencies and drops are known exactly:
`StreamSpec` gives each a rate, phase, stamp jitter (Gaussian), latency +
|Gaussian| jitter clipped at 4σ, random drops and random reordering (an extra
delay that can push a message behind its successor). Seeds and the whole
configuration go into the JSON, so every number can be reproduced.
"""

from __future__ import annotations

import argparse
import json
import sys
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..core.sync import Bundle, StreamConfig, Synchroniser, open_interval_free
from .approximate_time import ApproximateTimeSynchronizer

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S


@dataclass(frozen=True)
class StreamSpec:
    """How a synthetic stream is generated (all ms except rate)."""

    name: str
    rate_hz: float
    phase_ms: float = 0.0  # first stamp after t0
    offset_ms: float = 0.0  # known stamp offset vs the reference (triggered sensors)
    stamp_jitter_ms: float = 0.0
    latency_ms: float = 10.0
    latency_jitter_ms: float = 1.0
    drop: float = 0.0  # probability a frame never arrives
    reorder: float = 0.0  # probability a frame gets an extra delay of up to `reorder_ms`
    reorder_ms: float = 0.0
    stop_s: float | None = None  # the sensor stops at this drive time ...
    resume_s: float | None = None  # ... and comes back here

    @property
    def latency_bound_ms(self) -> float:
        return self.latency_ms + self.reorder_ms


@dataclass(frozen=True)
class Event:
    name: str
    stamp_ns: int
    recv_ns: int


def generate_events(specs: list[StreamSpec], duration_s: float, seed: int, t0: int = T0) -> list[Event]:
    """All arrivals of all streams, sorted by receive time (ties: stamp, name)."""
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for sp in specs:
        period = S / sp.rate_hz
        n = int(duration_s * sp.rate_hz)
        k = np.arange(n)
        nominal = t0 + int(sp.phase_ms * MS) + (k * period).astype(np.int64)
        sj = np.clip(rng.normal(0.0, sp.stamp_jitter_ms * MS, n), -3 * sp.stamp_jitter_ms * MS,
                     3 * sp.stamp_jitter_ms * MS) if sp.stamp_jitter_ms else np.zeros(n)
        stamps = nominal + sj.astype(np.int64)
        lj = np.minimum(np.abs(rng.normal(0.0, sp.latency_jitter_ms * MS, n)), 4 * sp.latency_jitter_ms * MS)
        extra = np.where(rng.random(n) < sp.reorder, rng.uniform(0, sp.reorder_ms * MS, n), 0.0)
        recv = stamps + int(sp.latency_ms * MS) + lj.astype(np.int64) + extra.astype(np.int64)
        keep = rng.random(n) >= sp.drop
        if sp.stop_s is not None:
            t_rel = (nominal - t0) / S
            off = (t_rel >= sp.stop_s) & (t_rel < (sp.resume_s if sp.resume_s is not None else np.inf))
            keep &= ~off
        events += [Event(sp.name, int(s), int(r)) for s, r in zip(stamps[keep], recv[keep], strict=True)]
    events.sort(key=lambda e: (e.recv_ns, e.stamp_ns, e.name))
    return events


def stream_configs(specs: list[StreamSpec], **overrides: Any) -> list[StreamConfig]:
    """The synchroniser's view of the streams: rate, offset and latency bound as the generator has them."""
    out = []
    for sp in specs:
        c = StreamConfig.from_ms(sp.name, sp.rate_hz, offset_ms=sp.offset_ms, latency_ms=sp.latency_bound_ms,
                                 jitter_ms=sp.latency_jitter_ms)
        out.append(replace(c, **overrides.get(sp.name, {})))
    return out


def run_sync(events: list[Event], sync: Synchroniser, end_ns: int | None = None) -> list[Bundle]:
    """Feed arrivals in order, polling exactly when the synchroniser asks to (a perfect timer)."""
    bundles: list[Bundle] = []
    t_prev = events[0].recv_ns if events else 0

    def until(t: int) -> None:
        nonlocal t_prev
        while (w := sync.next_wake_ns()) <= t:
            t_prev = max(w, t_prev)
            bundles.extend(sync.poll(t_prev))
            if sync.next_wake_ns() == w:  # nothing changed at that instant: wait for the next event
                break

    for ev in events:
        until(ev.recv_ns)
        t_prev = max(t_prev, ev.recv_ns)
        sync.add(ev.name, ev.stamp_ns, ev.recv_ns, ev)
        bundles += sync.poll(ev.recv_ns)
    until(end_ns if end_ns is not None else t_prev + S)
    return bundles


# --- offline optimum and the minimum necessary wait ------------------------------------------
@dataclass
class _Arrivals:
    stamps_by_recv: list[int]
    recvs: list[int]  # sorted
    recv_of: dict[int, int]
    all_stamps: list[int]  # sorted


def _arrivals(events: list[Event]) -> dict[str, _Arrivals]:
    per: dict[str, list[Event]] = {}
    for e in events:
        per.setdefault(e.name, []).append(e)
    out = {}
    for n, evs in per.items():
        evs = sorted(evs, key=lambda e: e.recv_ns)
        out[n] = _Arrivals([e.stamp_ns for e in evs], [e.recv_ns for e in evs], {e.stamp_ns: e.recv_ns for e in evs},
                           sorted(e.stamp_ns for e in evs))
    return out


def _nearest_unused(stamps: list[int], used: set[int], tau: int, tol: int) -> int | None:
    i = bisect_left(stamps, tau)
    best = None
    j = i - 1
    while j >= 0 and tau - stamps[j] <= tol:
        if stamps[j] not in used:
            best = stamps[j]
            break
        j -= 1
    j = i
    while j < len(stamps) and stamps[j] - tau <= tol:
        if stamps[j] not in used:
            if best is None or stamps[j] - tau < tau - best:
                best = stamps[j]
            break
        j += 1
    return best


def _certain_at(arr: _Arrivals, opt: int | None, tau: int, tol: int, lat: int, spacing: int, start: int) -> int:
    """Earliest t >= start at which the arrivals up to t prove `opt` is the best choice (model in the docstring)."""
    t = start
    while True:
        if opt is not None and arr.recv_of[opt] > t:
            t = arr.recv_of[opt]
            continue
        n_known = bisect_right(arr.recvs, t)
        known = sorted(arr.stamps_by_recv[:n_known])
        if opt is None:
            lo, hi = tau - tol - 1, tau + tol + 1
        else:
            d = abs(opt - tau)
            lo, hi = tau - d, tau + d
        sup = open_interval_free(known, max(lo, t - lat), hi, spacing)
        if sup is None:
            return t
        nxt = arr.recvs[n_known] if n_known < len(arr.recvs) else None
        wake = sup + lat
        t = wake if nxt is None or wake < nxt else nxt


@dataclass
class Comparison:
    bundles: int
    identical: int
    waits_ms: list[float]
    minimum_ms: list[float]
    oracle_ms: list[float]
    reference_frames: int
    reference_without_bundle: int

    @property
    def identical_pct(self) -> float:
        return 100.0 * self.identical / self.bundles if self.bundles else 0.0


def compare_with_optimum(events: list[Event], configs: list[StreamConfig], reference: str,
                         bundles: list[Bundle]) -> Comparison:
    """Per online bundle: is it the offline optimum at the same T, and what was the minimum necessary wait?"""
    arr = _arrivals(events)
    cfg = {c.name: c for c in configs}
    used: dict[str, set[int]] = {n: set() for n in cfg}
    identical = 0
    waits, minimum, oracle = [], [], []
    for b in bundles:
        avail = b.emitted_ns - b.wait_ns
        same = True
        need = avail
        need_oracle = avail
        for name, c in cfg.items():
            a = arr.get(name)
            if name == reference and b.trigger == "reference":
                opt: int | None = b.t_ns
            else:
                opt = None if a is None else _nearest_unused(a.all_stamps, used[name], b.t_ns + c.offset_ns,
                                                             c.tolerance)
            got = b.members[name].stamp_ns if name in b.members else None
            same &= got == opt
            if opt is not None:
                used[name].add(opt)
                need_oracle = max(need_oracle, a.recv_of[opt])  # type: ignore[union-attr]
            if a is not None and not (name == reference and b.trigger == "reference"):
                lat = max(c.latency_bound_ns, 0)
                need = max(need, _certain_at(a, opt, b.t_ns + c.offset_ns, c.tolerance, lat, c.min_spacing_ns,
                                             avail))
            elif opt is not None:
                need = max(need, a.recv_of[opt])  # type: ignore[union-attr]
        identical += same
        waits.append(b.wait_ns / MS)
        minimum.append((need - avail) / MS)
        oracle.append((need_oracle - avail) / MS)
    ref_stamps = {e.stamp_ns for e in events if e.name == reference}
    in_bundles = {b.members[reference].stamp_ns for b in bundles if reference in b.members}
    return Comparison(len(bundles), identical, waits, minimum, oracle, len(ref_stamps),
                      len(ref_stamps - in_bundles))


# --- ApproximateTime side by side -----------------------------------------------------------------
def run_approximate_time(events: list[Event], names: list[str], queue_size: int, slop_ns: int) -> dict[str, Any]:
    at = ApproximateTimeSynchronizer(list(names), queue_size, slop_ns)
    sets = []
    ref_recv = {}
    for e in events:
        if e.name not in names:
            continue
        if e.name == names[0]:
            ref_recv[e.stamp_ns] = e.recv_ns
        sets += at.add(e.name, e.stamp_ns, e.recv_ns, e)
    lat = [(s.emitted_ns - ref_recv[s.stamps[names[0]]]) / MS for s in sets]
    ref_in = {s.stamps[names[0]] for s in sets}
    return {"sets": len(sets), "reference_frames": len(ref_recv), "reference_without_set": len(set(ref_recv) - ref_in),
            "latency_ms": lat}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


# --- the study --------------------------------------------------------------------------------------
def default_specs() -> list[StreamSpec]:
    """A rig like the default one, plus a triggered camera with a known offset and a reordering radar."""
    return [
        StreamSpec("lidar_top", 10.0, phase_ms=3.0, stamp_jitter_ms=0.3, latency_ms=12.0, latency_jitter_ms=1.0),
        StreamSpec("camera_front", 15.0, phase_ms=11.0, stamp_jitter_ms=1.0, latency_ms=25.0, latency_jitter_ms=2.0),
        StreamSpec("camera_left", 10.0, phase_ms=3.0 - 40.0 + 100.0, offset_ms=-40.0, stamp_jitter_ms=1.0,
                   latency_ms=25.0, latency_jitter_ms=2.0),
        StreamSpec("radar_front", 13.0, phase_ms=29.0, stamp_jitter_ms=2.0, latency_ms=30.0, latency_jitter_ms=3.0,
                   reorder=0.05, reorder_ms=60.0),
        StreamSpec("imu", 100.0, phase_ms=1.0, stamp_jitter_ms=0.1, latency_ms=2.0, latency_jitter_ms=0.3),
    ]


def study_optimum(seeds: list[int], duration_s: float) -> dict[str, Any]:
    specs = default_specs()
    rows = []
    all_w, all_m, all_o = [], [], []
    ident = total = lost = 0
    for seed in seeds:
        events = generate_events(specs, duration_s, seed)
        configs = stream_configs(specs)
        sync = Synchroniser(configs, "lidar_top")
        bundles = run_sync(events, sync)
        cmp_ = compare_with_optimum(events, configs, "lidar_top", bundles)
        rows.append({"seed": seed, "bundles": cmp_.bundles, "identical_pct": cmp_.identical_pct,
                     "wait_ms_p50": _pct(cmp_.waits_ms, 50), "wait_ms_p99": _pct(cmp_.waits_ms, 99),
                     "minimum_ms_p50": _pct(cmp_.minimum_ms, 50), "minimum_ms_p99": _pct(cmp_.minimum_ms, 99),
                     "oracle_ms_p50": _pct(cmp_.oracle_ms, 50), "oracle_ms_p99": _pct(cmp_.oracle_ms, 99),
                     "reference_without_bundle": cmp_.reference_without_bundle,
                     "over_minimum": int(sum(w > m + 1e-6 for w, m in zip(cmp_.waits_ms, cmp_.minimum_ms,
                                                                            strict=True)))})
        all_w += cmp_.waits_ms
        all_m += cmp_.minimum_ms
        all_o += cmp_.oracle_ms
        ident += cmp_.identical
        total += cmp_.bundles
        lost += cmp_.reference_without_bundle
    over = sum(w > m + 1e-6 for w, m in zip(all_w, all_m, strict=True))
    return {
        "streams": [asdict(s) for s in specs], "seeds": seeds, "duration_s": duration_s, "per_seed": rows,
        "total": {"bundles": total, "identical_pct": 100.0 * ident / total if total else 0.0,
                  "wait_ms_p50": _pct(all_w, 50), "wait_ms_p99": _pct(all_w, 99),
                  "minimum_ms_p50": _pct(all_m, 50), "minimum_ms_p99": _pct(all_m, 99),
                  "oracle_ms_p50": _pct(all_o, 50), "oracle_ms_p99": _pct(all_o, 99),
                  "bundles_waiting_longer_than_minimum": int(over), "reference_without_bundle": lost},
    }


def study_vs_approximate_time(seeds: list[int], duration_s: float, drops: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0),
                              queue_size: int = 10) -> dict[str, Any]:
    base = [s for s in default_specs() if s.name in ("lidar_top", "camera_front", "radar_front")]
    names = [s.name for s in base]
    configs = stream_configs(base)
    slop = max(c.tolerance for c in configs)
    rows = []
    for drop in drops:
        acc: dict[str, Any] = {"drop": drop, "ours_bundles": 0, "ours_ref_lost": 0, "ours_camera_matched": 0,
                               "at_sets": 0, "at_ref_lost": 0, "ref_frames": 0}
        ours_lat: list[float] = []
        at_lat: list[float] = []
        for seed in seeds:
            specs = [replace(s, drop=drop) if s.name == "camera_front" else s for s in base]
            events = generate_events(specs, duration_s, seed)
            bundles = run_sync(events, Synchroniser(configs, "lidar_top"))
            ref_stamps = {e.stamp_ns for e in events if e.name == "lidar_top"}
            got = {b.members["lidar_top"].stamp_ns for b in bundles if "lidar_top" in b.members}
            acc["ours_bundles"] += len(bundles)
            acc["ours_ref_lost"] += len(ref_stamps - got)
            acc["ours_camera_matched"] += sum("camera_front" in b.members for b in bundles)
            ours_lat += [b.wait_ns / MS for b in bundles if b.trigger == "reference"]
            at = run_approximate_time(events, names, queue_size, slop)
            acc["at_sets"] += at["sets"]
            acc["at_ref_lost"] += at["reference_without_set"]
            acc["ref_frames"] += at["reference_frames"]
            at_lat += at["latency_ms"]
        acc.update(ours_latency_ms_p50=_pct(ours_lat, 50), ours_latency_ms_p99=_pct(ours_lat, 99),
                   at_latency_ms_p50=_pct(at_lat, 50), at_latency_ms_p99=_pct(at_lat, 99))
        rows.append(acc)
    return {"streams": [asdict(s) for s in base], "seeds": seeds, "duration_s": duration_s,
            "approximate_time": {"queue_size": queue_size, "slop_ms": slop / MS}, "dropping": "camera_front",
            "rows": rows}


def render(result: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    opt = result["optimum"]
    t1 = Table(title=f"core.sync vs offline optimum ({opt['duration_s']:g} s per seed, seeds {opt['seeds']})")
    for col in ("seed", "bundles", "identical %", "wait p50/p99 ms", "minimum p50/p99 ms", "oracle p50/p99 ms",
                "waited > min", "ref lost"):
        t1.add_column(col, justify="right")
    for r in opt["per_seed"] + [dict(opt["total"], seed="all", over_minimum=opt["total"][
            "bundles_waiting_longer_than_minimum"])]:
        t1.add_row(str(r["seed"]), str(r["bundles"]), f"{r['identical_pct']:.2f}",
                   f"{r['wait_ms_p50']:.1f} / {r['wait_ms_p99']:.1f}",
                   f"{r['minimum_ms_p50']:.1f} / {r['minimum_ms_p99']:.1f}",
                   f"{r['oracle_ms_p50']:.1f} / {r['oracle_ms_p99']:.1f}", str(r["over_minimum"]),
                   str(r["reference_without_bundle"]))
    at = result["approximate_time"]
    t2 = Table(title=f"core.sync vs ApproximateTime (queue_size {at['approximate_time']['queue_size']}, slop "
                     f"{at['approximate_time']['slop_ms']:.1f} ms), {at['dropping']} dropping frames")
    for col in ("camera drop", "LiDAR frames", "ours: bundles", "ours: LiDAR frames lost", "ours: with camera",
                "ours: added ms p50/p99", "AT: sets", "AT: LiDAR frames lost", "AT: added ms p50/p99"):
        t2.add_column(col, justify="right")
    for r in at["rows"]:
        t2.add_row(f"{r['drop']:.0%}", str(r["ref_frames"]), str(r["ours_bundles"]), str(r["ours_ref_lost"]),
                   str(r["ours_camera_matched"]),
                   f"{r['ours_latency_ms_p50']:.1f} / {r['ours_latency_ms_p99']:.1f}", str(r["at_sets"]),
                   str(r["at_ref_lost"]), f"{r['at_latency_ms_p50']:.1f} / {r['at_latency_ms_p99']:.1f}")
    return Group(t1, t2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ros_fusion.eval.sync_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102], help="held-out seeds (tests use 0-99)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of simulated streams per seed")
    p.add_argument("--json", metavar="OUT", help="also write all numbers and the configuration to this file")
    args = p.parse_args(argv)
    result = {"optimum": study_optimum(args.seeds, args.duration),
              "approximate_time": study_vs_approximate_time(args.seeds, args.duration)}
    from ..console import make_console

    make_console().print(render(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
