"""The reporting layer of `ros-fusion eval`: robustness matrix, latency statistics, metrics.json, report.md, plots.

Pure functions of the numbers the evaluator collected (DESIGN §9); nothing here
runs the pipeline. The metrics dict has these sections, every one optional, so
a quick run (no robustness, no latency, live mode) still gets a report:

    run            what was evaluated: bags, strategy, drops, model, backend, seed, config, mode
    summary        `DetectionReport.summary()` + n_frames
    per_mode       fusion mode → {n_bundles, n_frames, mAP}
    robustness     `robustness_matrix` output
    robustness_in_coverage  `coverage_matrix` output: the same cells scored only where the kept sensors see
    latency_ms     `latency_stats` output (a stage may carry only some statistics, e.g. a node's p50)
    mode_switches  [{t_s, from, to, reason, bag?}]
    faults         [{sensor, kind, t0_s, t1_s, ...}]
    devkit         `eval.devkit_check.devkit_map` output (the nuscenes-devkit cross-check)
    live, bundles, drops, counters, rejected, dropped_by_request, rejected_messages: flat counters

Why it looks as it does:
- The robustness matrix is the table a user reads to trust the fallback (DESIGN §8:
  the default policy must be the better one on it), so it names the best strategy per
  sensor pattern and checks that `auto` is within `AUTO_TOLERANCE` of it.
- metrics.json is byte-identical for the same input (sorted keys, floats rounded to
  `JSON_SIGNIFICANT_DIGITS` significant digits, NaN/Inf → null): offline evaluation
  is deterministic (DESIGN §9), and a diff of two metrics.json files must only show
  what changed, not float noise.
- matplotlib and rich are imported inside the functions that draw or print.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.types import Obstacles
from .detection_metrics import EvalConfig, evaluate
from .network_eval import PATTERNS, map_ratio
from .plots import BevScene

#: Strategies in the order a reader expects them; others follow, sorted.
STRATEGY_ORDER: tuple[str, ...] = ("intermediate", "late", "auto")
AUTO = "auto"
#: `auto` passes a pattern when its mAP is at least the best fixed strategy's minus this.
AUTO_TOLERANCE = 0.01
JSON_SIGNIFICANT_DIGITS = 6
LATENCY_KEYS: tuple[str, ...] = ("n", "mean", "p50", "p95", "p99", "max")
PLOT_FILES = {"robustness": "robustness.png", "per_class_ap": "per_class_ap.png", "range_bands": "range_bands.png",
              "latency": "latency.png", "bev": "bev.png"}
_DASH = "—"


# ----------------------------------------------------------------------------- robustness matrix
#: Fault-response columns (eval.bag_eval.fault_response keys) and their headers.
FAULT_KEYS: tuple[str, ...] = ("excluded_after_s", "included_after_s", "mode_switch_after_s", "max_gap_during_s")
FAULT_HEADERS: tuple[str, ...] = ("left out after (s)", "back in after (s)", "mode switch after (s)",
                                  "longest output gap (s)")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def order_strategies(names: Sequence[str]) -> list[str]:
    """intermediate, late, auto first (those present), then any other strategy name sorted."""
    unique = set(names)
    return [s for s in STRATEGY_ORDER if s in unique] + sorted(unique - set(STRATEGY_ORDER))


def _cell_names(runs: Any, where: str) -> tuple[list[str], list[str]]:
    """Patterns (`PATTERNS` order, unknown names after, sorted) and strategies of a (pattern, strategy) mapping;
    anything else is refused naming `where`."""
    if not isinstance(runs, Mapping):
        raise ValueError(f"{where}: runs must map (pattern, strategy) to frames, got {type(runs).__name__}")
    for key in runs:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) and k for k in key)):
            raise ValueError(f"{where}: key {key!r} is not a (pattern, strategy) pair of names")
    names = {p for p, _ in runs}
    return [p for p in PATTERNS if p in names] + sorted(names - set(PATTERNS)), order_strategies([s for _, s in runs])


def robustness_matrix(runs: Mapping[tuple[str, str], Sequence[tuple[Obstacles, Obstacles]]],
                      config: EvalConfig | None = None) -> dict[str, Any]:
    """mAP and NDS for every (sensor pattern, fusion strategy) cell, the best fixed strategy per pattern, auto's check.

    `runs[(pattern, strategy)]` holds the (ground truth, prediction) frames of that cell.
    Patterns come in `PATTERNS` order (unknown names after them, sorted). A cell
    without ground truth has mAP NaN (→ null in JSON) and never wins. `best` is
    None for a pattern whose fixed strategies all have NaN mAP; `auto_ok` (present
    only when `auto` was run) is None where it cannot be decided (no auto cell, or
    no finite mAP to compare).
    """
    patterns, strategies = _cell_names(runs, "robustness_matrix")
    cfg = config or EvalConfig()
    m_ap: dict[str, dict[str, float]] = {p: {} for p in patterns}
    nds: dict[str, dict[str, float]] = {p: {} for p in patterns}
    n_frames: dict[str, dict[str, int]] = {p: {} for p in patterns}
    for p in patterns:
        for s in strategies:
            if (p, s) not in runs:
                continue
            frames = list(runs[(p, s)])
            for i, fr in enumerate(frames):
                if not (isinstance(fr, tuple) and len(fr) == 2 and all(isinstance(o, Obstacles) for o in fr)):
                    raise ValueError(f"robustness_matrix: frame {i} of ({p}, {s}) is not a (gt, pred) Obstacles pair")
            rep = evaluate(frames, cfg)
            m_ap[p][s], nds[p][s], n_frames[p][s] = float(rep.mean_ap), float(rep.nds), len(frames)
    best: dict[str, str | None] = {}
    for p in patterns:
        fixed = [(m_ap[p][s], -k, s) for k, s in enumerate(strategies) if s != AUTO and _finite(m_ap[p].get(s))]
        best[p] = max(fixed)[2] if fixed else None  # ties: the strategy listed first
    out: dict[str, Any] = {"patterns": patterns, "strategies": strategies, "mAP": m_ap, "NDS": nds,
                           "n_frames": n_frames, "best": best}
    if AUTO in strategies:
        auto_ok: dict[str, bool | None] = {}
        for p in patterns:
            a = m_ap[p].get(AUTO)
            b = best[p]
            auto_ok[p] = None if b is None or not _finite(a) else bool(a >= m_ap[p][b] - AUTO_TOLERANCE)
        out["auto_ok"] = auto_ok
        out["auto_tolerance"] = AUTO_TOLERANCE
    return out


def coverage_matrix(runs: Mapping[tuple[str, str], Sequence[tuple[Obstacles, Obstacles, Obstacles]]],
                    config: EvalConfig | None = None) -> dict[str, Any]:
    """Every (pattern, strategy) cell scored only inside the coverage of the pattern's sensors.

    `runs[(pattern, strategy)]` holds (ground truth, prediction, all-sensor prediction of the
    same strategy) per frame, all three already cut to that coverage. With one front camera
    and one front radar, "LiDAR missing" cannot see most of the 360° ground truth; this
    separates "cannot see" from "sees badly" (as `ros-fusion eval-model`'s in_coverage does).
    Per cell: n_gt, mAP there, all_sensors_mAP there, ratio (None where all-sensor mAP is not > 0).
    """
    patterns, strategies = _cell_names(runs, "coverage_matrix")
    cfg = config or EvalConfig()
    cells: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in patterns}
    for (p, s), frames in runs.items():
        frames = list(frames)
        for i, fr in enumerate(frames):
            if not (isinstance(fr, tuple) and len(fr) == 3 and all(isinstance(o, Obstacles) for o in fr)):
                raise ValueError(f"coverage_matrix: frame {i} of ({p}, {s}) is not a (gt, pred, all) Obstacles triple")
        part = evaluate([(g, d) for g, d, _ in frames], cfg)
        whole = evaluate([(g, a) for g, _, a in frames], cfg)
        cells[p][s] = {"n_gt": int(sum(len(g) for g, _, _ in frames)), "mAP": float(part.mean_ap),
                       "all_sensors_mAP": float(whole.mean_ap), "ratio": map_ratio(part, whole)}
    return {"patterns": patterns, "strategies": strategies, "cells": cells}


def _coverage_rows(cov: Mapping[str, Any]) -> tuple[list[str], list[list]]:
    """Header and rows of the in-coverage table: mAP there per strategy, then the all-sensor mAP on the same
    region and the ratio, both for `auto` (else the first strategy)."""
    strategies = list(cov.get("strategies", []))
    cells = cov.get("cells", {}) if isinstance(cov.get("cells"), Mapping) else {}
    ref = AUTO if AUTO in strategies else (strategies[0] if strategies else None)
    header = ["pattern", "GT there", *strategies, f"all sensors, {ref}", "ratio"]
    rows = []
    for p in cov.get("patterns", []):
        row = cells.get(p, {}) if isinstance(cells.get(p), Mapping) else {}
        n_gt = next((v for s in strategies if (v := _cell_value(row, s, "n_gt")) is not None), None)
        rows.append([p, n_gt, *(_fmt(_cell_value(row, s, "mAP")) for s in strategies),
                     _fmt(_cell_value(row, ref, "all_sensors_mAP")), _fmt(_cell_value(row, ref, "ratio"), 2)])
    return header, rows


def _cell_value(row: Mapping[str, Any], strategy: str | None, key: str) -> Any:
    cell = row.get(strategy) if strategy is not None else None
    return cell.get(key) if isinstance(cell, Mapping) else None


# ----------------------------------------------------------------------------- latency
def latency_stats(samples: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage (union of the samples' keys; a sample without a stage does not count for it) in ms:
    p50/p95/p99 (numpy linear interpolation), max, mean and n. Stages keep first-seen order."""
    values: dict[str, list[float]] = {}
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise ValueError(f"latency_stats: sample {i} is {type(sample).__name__}, not a stage → ms mapping")
        for stage, v in sample.items():
            if not isinstance(stage, str) or not stage:
                raise ValueError(f"latency_stats: sample {i} has a stage name {stage!r} that is not a string")
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"latency_stats: sample {i}, stage {stage!r}: {v!r} is not a finite number of ms")
            values.setdefault(stage, []).append(float(v))
    out: dict[str, dict[str, float]] = {}
    for stage, vals in values.items():
        a = np.asarray(vals, np.float64)
        p50, p95, p99 = np.percentile(a, [50, 95, 99], method="linear")
        out[stage] = {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max()),
                      "mean": float(a.mean()), "n": int(a.size)}
    return out


#: Seconds of drive at the start of a live run whose latency is compared with the rest (warm start).
STARTUP_WINDOW_S = 5.0
#: Slowest outputs of the start-up window listed (drive time, latency) in the report.
STARTUP_WORST = 3


def startup_latency(times_s: Sequence[float], latencies_ms: Sequence[float],
                    window_s: float = STARTUP_WINDOW_S) -> dict[str, Any]:
    """End-to-end latency of the first `window_s` of a run against the rest (live replay, demo).

    Why: a node that loads lazily (first inference, allocations, DDS discovery) is slow for its
    first bundles and drops some; a whole-run p99 hides that behind thousands of warm bundles.
    `times_s[i]` is output i's time from the start of the drive. The ratio is p99(first) /
    p99(rest), None when either part has no output.
    """
    if len(times_s) != len(latencies_ms):
        raise ValueError(f"startup_latency: {len(times_s)} times for {len(latencies_ms)} latencies")
    t = np.asarray(times_s, np.float64)
    lat = np.asarray(latencies_ms, np.float64)
    first, rest = lat[t < window_s], lat[t >= window_s]

    def p99(a: np.ndarray) -> float | None:
        return float(np.percentile(a, 99)) if a.size else None

    p_first, p_rest = p99(first), p99(rest)
    # Where the window's worst outputs fall tells a lazy first use (one spike) from load (a slow stretch).
    in_first = np.flatnonzero(t < window_s)
    worst = in_first[np.argsort(lat[in_first])[::-1][:STARTUP_WORST]]
    return {"window_s": float(window_s), "n_first": int(first.size), "n_rest": int(rest.size),
            "p99_first_ms": p_first, "p99_rest_ms": p_rest,
            "max_first_ms": float(first.max()) if first.size else None,
            "p99_ratio": (p_first / p_rest) if p_first is not None and p_rest else None,
            "slowest_first": [[round(float(t[i]), 2), round(float(lat[i]), 1)] for i in sorted(worst)]}


def describe_startup(st: Mapping[str, Any]) -> str:
    """One line for the console: the start-up window's p99 against the rest's, and its frames without output."""
    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.1f} ms"

    ratio = st.get("p99_ratio")
    n_first, n_rest = st.get("n_first"), st.get("n_rest")
    # A drive not much longer than the window (a CI smoke) leaves a "rest" of a few outputs, whose p99 is their max.
    short = (f" (only {n_rest} outputs after the window: not a comparison)"
             if isinstance(n_first, int) and isinstance(n_rest, int) and 0 < n_rest < n_first else "")
    return (f"start-up (first {st.get('window_s', STARTUP_WINDOW_S):g} s of drive): p99 {ms(st.get('p99_first_ms'))} "
            f"vs {ms(st.get('p99_rest_ms'))} after (ratio {'-' if ratio is None else f'{ratio:.2f}'}{short}), "
            f"max {ms(st.get('max_first_ms'))}, frames without output {st.get('frames_without_output_first', '-')}"
            + (f"; slowest at {', '.join(f'{t:g} s ({v:.0f} ms)' for t, v in st['slowest_first'])}"
               if st.get("slowest_first") else ""))


# ----------------------------------------------------------------------------- JSON
def _round_sig(v: float) -> float | None:
    if not math.isfinite(v):
        return None
    r = float(f"{v:.{JSON_SIGNIFICANT_DIGITS}g}")
    return 0.0 if r == 0 else r  # no "-0.0"


def _key(k: Any, where: str) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (bool, np.bool_)):
        return str(bool(k)).lower()
    if isinstance(k, (int, np.integer)):
        return str(int(k))
    if isinstance(k, (float, np.floating)):
        return f"{float(k):g}"
    if isinstance(k, tuple) and all(isinstance(x, str) for x in k):
        return "/".join(k)
    if isinstance(k, enum.Enum):
        return str(k.value)
    raise ValueError(f"metrics_to_json: key {k!r} at {where or 'top level'} cannot be a JSON key")


def _plain(x: Any, where: str) -> Any:
    """JSON-safe plain values (see `metrics_to_json`)."""
    if isinstance(x, Mapping):
        out: dict[str, Any] = {}
        for k, v in x.items():
            sk = _key(k, where)
            if sk in out:
                raise ValueError(f"metrics_to_json: keys {k!r} and another both become {sk!r} at {where or 'top'}")
            out[sk] = _plain(v, f"{where}.{sk}" if where else sk)
        return out
    if isinstance(x, (str, type(None))):
        return x
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _round_sig(float(x))
    if isinstance(x, np.ndarray):
        return _plain(x.tolist(), where)
    if isinstance(x, (list, tuple, set, frozenset)):
        items = sorted(x, key=repr) if isinstance(x, (set, frozenset)) else x
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, enum.Enum):
        return _plain(x.value, where)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _plain(dataclasses.asdict(x), where)
    raise ValueError(f"metrics_to_json: {type(x).__name__} at {where or 'top level'} has no JSON form")


def metrics_to_json(metrics: Mapping[str, Any]) -> str:
    """Deterministic JSON: sorted keys, floats to 6 significant digits, NaN/Inf → null, numpy → Python.

    Tuples, sets and arrays become lists (sets sorted), dataclasses dicts, Paths
    strings, non-string keys strings (tuple keys joined with "/"). Anything else is
    a ValueError naming where it sits, so a stray object never reaches the file.
    """
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics_to_json: metrics must be a mapping, got {type(metrics).__name__}")
    return json.dumps(_plain(metrics, ""), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------- formatting helpers
def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if _finite(v):
        return f"{float(v):.{digits}f}"
    return _DASH


def _cell(v: Any) -> str:
    """Text safe inside a markdown table cell."""
    s = v if isinstance(v, str) else _fmt(v) if v is None or isinstance(v, (int, float, np.number)) else str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def _section(metrics: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """A section of the metrics dict, None when absent; a present section of the wrong type is an error."""
    v = metrics.get(name)
    if v is None:
        return None
    if not isinstance(v, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"metrics[{name!r}] must be a {want}, got {type(v).__name__}")
    return v


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None) -> list[str]:
    right = right or [i > 0 for i in range(len(header))]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _robustness_rows(rob: Mapping[str, Any], bold: Any, marks: tuple[str, str, str]) -> tuple[list[str], list[list]]:
    """Header and rows of the matrix: the best cell of a row passed through `bold`, the auto cell followed by
    marks[0] (within tolerance), marks[1] (not) or marks[2] (undecidable). Names are returned as they are."""
    strategies = list(rob.get("strategies", []))
    table = rob.get("mAP", {}) if isinstance(rob.get("mAP"), Mapping) else {}
    best = rob.get("best", {}) if isinstance(rob.get("best"), Mapping) else {}
    auto_ok = rob.get("auto_ok", {}) if isinstance(rob.get("auto_ok"), Mapping) else {}
    header = ["pattern", "sensors kept", *strategies, "best"]
    rows = []
    for p in rob.get("patterns", []):
        cells: list[Any] = []
        for s in strategies:
            v = table.get(p, {}).get(s) if isinstance(table.get(p), Mapping) else None
            text = _fmt(v)
            if s == AUTO and p in auto_ok:
                text += " " + (marks[0] if auto_ok[p] is True else marks[1] if auto_ok[p] is False else marks[2])
            cells.append(bold(text) if best.get(p) == s and _finite(v) else text)
        kept = " + ".join(PATTERNS[p]) if p in PATTERNS else "?"
        rows.append([p, kept, *cells, best.get(p) or _DASH])
    return header, rows


def _latency_rows(lat: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for stage, st in lat.items():
        st = st if isinstance(st, Mapping) else {}
        rows.append([stage, *(st.get(k) for k in LATENCY_KEYS)])
    return rows


def _summary_rows(summary: Mapping[str, Any], devkit: Mapping[str, Any] | None) -> list[list[Any]]:
    rows: list[list[Any]] = [["frames scored", summary.get("n_frames")]]
    if isinstance(summary.get("n_gt_unobserved"), int):
        rows.append(["GT left out: no LiDAR/radar return", summary["n_gt_unobserved"]])
    for key, label in (("mAP", "mAP"), ("NDS", "NDS"), ("trans_err", "ATE (m)"), ("scale_err", "ASE (1-IoU)"),
                       ("orient_err", "AOE (rad)"), ("vel_err", "AVE (m/s)")):
        if key in summary:
            rows.append([label, summary[key]])
    if devkit is not None:
        rows.append(["mAP, nuscenes-devkit", devkit.get("mAP")])
        ours, theirs = summary.get("mAP"), devkit.get("mAP")
        if _finite(ours) and _finite(theirs):
            rows.append(["|ours − devkit|", abs(float(ours) - float(theirs))])
    return rows


def _flat_sections(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The counter-like sections as (title, mapping) pairs, in a fixed order."""
    out = []
    for name, title in (("live", "Live replay"), ("bundles", "Bundles"), ("drops", "Drops"),
                        ("dropped_by_request", "Withheld by --drop (messages)"), ("counters", "Counters"),
                        ("rejected", "Rejected input"), ("rejected_messages", "Undecodable bag messages")):
        sec = _section(metrics, name, Mapping)
        if sec:
            out.append((title, sec))
    return out


def _flat_value(v: Any) -> str:
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_flat_value(x)}" for k, x in v.items()) or _DASH
    if isinstance(v, (list, tuple)):
        return ", ".join(_flat_value(x) for x in v) or _DASH
    return v if isinstance(v, str) else _fmt(v)


# ----------------------------------------------------------------------------- report.md
def _report_md(metrics: Mapping[str, Any], plots: Mapping[str, Path]) -> str:
    L: list[str] = ["# ros_fusion evaluation report", ""]
    run = _section(metrics, "run", Mapping)
    summary = _section(metrics, "summary", Mapping)
    devkit = _section(metrics, "devkit", Mapping)
    if run:
        L += ["## What was evaluated", ""]
        bags = run.get("bags")
        if bags:
            L.append("- bags: " + ", ".join(f"`{b}`" for b in (bags if isinstance(bags, (list, tuple)) else [bags])))
        for key in ("mode", "strategy", "drops", "model", "model_status", "backend", "seed", "rate"):
            if run.get(key) not in (None, "", [], ()):
                L.append(f"- {key}: {_flat_value(run[key])}")
        if isinstance(run.get("config"), Mapping) and run["config"]:
            L += ["- config:", "", "```json", metrics_to_json(run["config"]).rstrip(), "```"]
        L.append("")
    if summary:
        L += ["## Summary", ""]
        L += _md_table(["metric", "value"], _summary_rows(summary, devkit))
        if devkit is not None:
            tool = devkit.get("devkit") if isinstance(devkit.get("devkit"), str) else "nuscenes-devkit"
            L += ["", f"The devkit rows score the same frames with {tool}; its mAP, like ours, leaves classes "
                  "without ground truth out of the mean."]
        L.append("")
        per_class = summary.get("per_class_AP")
        if isinstance(per_class, Mapping) and per_class:
            n_gt = summary.get("n_gt", {}) if isinstance(summary.get("n_gt"), Mapping) else {}
            dk = devkit.get("per_class_AP", {}) if devkit and isinstance(devkit.get("per_class_AP"), Mapping) else None
            header = ["class", "AP", "GT boxes"] + (["AP devkit"] if dk is not None else [])
            rows = [[c, v, n_gt.get(c), *([dk.get(c)] if dk is not None else [])] for c, v in per_class.items()]
            hidden = summary.get("n_gt_unobserved")
            note = (f" {hidden} ground-truth boxes in range that no LiDAR or radar return hit are left out, "
                    "as nuscenes-devkit's `filter_eval_boxes` does." if isinstance(hidden, int) and hidden else "")
            L += ["## Per-class AP", "", "Mean over the 0.5/1/2/4 m centre-distance thresholds; "
                  f"{_DASH} = no ground truth of that class.{note}", ""]
            L += _md_table(header, rows) + [""]
        bands = summary.get("per_band_mAP")
        if isinstance(bands, Mapping) and bands:
            L += ["## Per range band", ""]
            L += _md_table(["range (m)", "mAP"], [[b, v] for b, v in bands.items()]) + [""]
    per_mode = _section(metrics, "per_mode", Mapping)
    switches = _section(metrics, "mode_switches", (list, tuple))
    if per_mode or switches is not None:
        L += ["## Fusion modes", ""]
        if per_mode:
            rows = [[m, d.get("n_bundles"), d.get("n_frames"), d.get("mAP")] for m, d in per_mode.items()
                    if isinstance(d, Mapping)]
            L += _md_table(["mode", "bundles", "frames with GT", "mAP"], rows) + [""]
        if switches is not None:
            L.append(f"{len(switches)} mode switch{'es' if len(switches) != 1 else ''}.")
            if switches:
                L.append("")
                rows = [[s.get("t_s"), s.get("from"), s.get("to"), s.get("reason"), s.get("bag", "")]
                        for s in switches if isinstance(s, Mapping)]
                L += _md_table(["t (s)", "from", "to", "reason", "bag"], rows, [True, False, False, False, False])
            L.append("")
    rob = _section(metrics, "robustness", Mapping)
    if rob and rob.get("patterns") and rob.get("strategies"):
        L += ["## Robustness matrix (mAP)", "",
              "Sensor-availability pattern × fusion strategy. **Bold**: the best fixed strategy of the row; "
              f"auto: ✓ within {rob.get('auto_tolerance', AUTO_TOLERANCE):g} mAP of it, ✗ not, ? undecidable.", ""]
        header, rows = _robustness_rows(rob, "**{}**".format, ("✓", "✗", "?"))
        L += _md_table(header, rows, [False, False, *([True] * (len(header) - 3)), False]) + [""]
    cov = _section(metrics, "robustness_in_coverage", Mapping)
    if cov and cov.get("patterns") and cov.get("strategies"):
        L += ["## Robustness inside the kept sensors' coverage (mAP)", "",
              "Each cell scored only on ground truth and detections inside the BEV coverage of the sensors the "
              "pattern keeps, next to the all-sensor detections on that same region: a front camera and radar "
              "cannot see most of the 360° scene, and this separates \"cannot see\" from \"sees badly\".", ""]
        header, rows = _coverage_rows(cov)
        L += _md_table(header, rows, [False, *([True] * (len(header) - 1))]) + [""]
    lat = _section(metrics, "latency_ms", Mapping)
    if lat:
        L += ["## Latency (ms)", ""]
        L += _md_table(["stage", *LATENCY_KEYS], _latency_rows(lat)) + [""]
    faults = _section(metrics, "faults", (list, tuple))
    if faults:
        L += ["## Injected faults", ""]
        rows = [[f.get("sensor"), f.get("kind"), f.get("t0_s"), f.get("t1_s"), f.get("mode_during", ""),
                 *(f.get(k) for k in FAULT_KEYS)] for f in faults if isinstance(f, Mapping)]
        L += _md_table(["sensor", "kind", "from (s)", "to (s)", "mode without it", *FAULT_HEADERS], rows,
                       [False, False, True, True, False, True, True, True, True]) + [""]
    for title, sec in _flat_sections(metrics):
        L += [f"## {title}", ""]
        L += _md_table(["item", "value"], [[k, _flat_value(v)] for k, v in sec.items()], [False, True]) + [""]
    if plots:
        L += ["## Plots", ""]
        for name, p in plots.items():
            L += [f"![{name}]({p.name})", ""]
    return "\n".join(L).rstrip() + "\n"


def write_outputs(out_dir: Path, metrics: Mapping[str, Any], *, bev: BevScene | None = None) -> list[Path]:
    """Write metrics.json, the PNG plots whose data `metrics` holds (+ bev.png), and report.md linking them.

    Returns the written paths: metrics.json, report.md, then the PNGs.
    """
    from . import plots as P

    if not isinstance(metrics, Mapping):
        raise ValueError(f"write_outputs: metrics must be a mapping, got {type(metrics).__name__}")
    if bev is not None and not isinstance(bev, BevScene):
        raise ValueError(f"write_outputs: bev must be a BevScene, got {type(bev).__name__}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"write_outputs: {out_dir} exists and is not a directory")
    text = metrics_to_json(metrics)  # validate everything before the first file is written
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "metrics.json"
    json_path.write_text(text, encoding="utf-8")
    pngs: dict[str, Path] = {}
    rob = _section(metrics, "robustness", Mapping)
    if rob and rob.get("patterns") and rob.get("strategies") and isinstance(rob.get("mAP"), Mapping):
        pngs["robustness"] = P.plot_robustness(out_dir / PLOT_FILES["robustness"], rob)
    summary = _section(metrics, "summary", Mapping) or {}
    devkit = _section(metrics, "devkit", Mapping)
    if isinstance(summary.get("per_class_AP"), Mapping) and summary["per_class_AP"]:
        dk = devkit.get("per_class_AP") if devkit and isinstance(devkit.get("per_class_AP"), Mapping) else None
        pngs["per_class_ap"] = P.plot_per_class_ap(out_dir / PLOT_FILES["per_class_ap"], summary["per_class_AP"], dk)
    if isinstance(summary.get("per_band_mAP"), Mapping) and summary["per_band_mAP"]:
        pngs["range_bands"] = P.plot_range_bands(out_dir / PLOT_FILES["range_bands"], summary["per_band_mAP"])
    lat = _section(metrics, "latency_ms", Mapping)
    if lat:
        pngs["latency"] = P.plot_latency(out_dir / PLOT_FILES["latency"], lat)
    if bev is not None:
        pngs["bev"] = P.render_bev(out_dir / PLOT_FILES["bev"], bev)
    md_path = out_dir / "report.md"
    md_path.write_text(_report_md(metrics, pngs), encoding="utf-8")
    return [json_path, md_path, *pngs.values()]


# ----------------------------------------------------------------------------- terminal
def render_console(metrics: Mapping[str, Any]) -> list[Any]:
    """rich renderables (tables) for the sections present in `metrics`, in report.md's order."""
    from rich.table import Table
    from rich.text import Text

    if not isinstance(metrics, Mapping):
        raise ValueError(f"render_console: metrics must be a mapping, got {type(metrics).__name__}")

    def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
              right: Sequence[bool] | None = None) -> Any:
        t = Table(title=Text(title, style="bold"))
        right = right or [i > 0 for i in range(len(header))]
        for h, r in zip(header, right, strict=True):
            t.add_column(h, justify="right" if r else "left")
        for row in rows:
            # Text(...) cells are never parsed as markup: names and reasons from the data stay literal
            t.add_row(*(c if isinstance(c, Text) else Text(c if isinstance(c, str) else _fmt(c)) for c in row))
        return t

    out: list[Any] = []
    run = _section(metrics, "run", Mapping)
    summary = _section(metrics, "summary", Mapping)
    devkit = _section(metrics, "devkit", Mapping)
    if summary:
        title = "detection metrics"
        if run and run.get("bags"):
            bags = run["bags"] if isinstance(run["bags"], (list, tuple)) else [run["bags"]]
            title += " — " + ", ".join(Path(str(b)).name for b in bags)
        out.append(table(title, ["metric", "value"], _summary_rows(summary, devkit)))
        per_class = summary.get("per_class_AP")
        if isinstance(per_class, Mapping) and per_class:
            n_gt = summary.get("n_gt", {}) if isinstance(summary.get("n_gt"), Mapping) else {}
            dk = devkit.get("per_class_AP", {}) if devkit and isinstance(devkit.get("per_class_AP"), Mapping) else None
            header = ["class", "AP", "GT boxes"] + (["AP devkit"] if dk is not None else [])
            out.append(table("per-class AP (mean over 0.5/1/2/4 m)", header,
                             [[c, v, n_gt.get(c), *([dk.get(c)] if dk is not None else [])]
                              for c, v in per_class.items()]))
        bands = summary.get("per_band_mAP")
        if isinstance(bands, Mapping) and bands:
            out.append(table("mAP per range band", ["range (m)", "mAP"], [[b, v] for b, v in bands.items()]))
    per_mode = _section(metrics, "per_mode", Mapping)
    if per_mode:
        out.append(table("fusion modes", ["mode", "bundles", "frames with GT", "mAP"],
                         [[m, d.get("n_bundles"), d.get("n_frames"), d.get("mAP")] for m, d in per_mode.items()
                          if isinstance(d, Mapping)]))
    switches = _section(metrics, "mode_switches", (list, tuple))
    if switches:
        out.append(table(f"mode switches ({len(switches)})", ["t (s)", "from", "to", "reason", "bag"],
                         [[s.get("t_s"), str(s.get("from")), str(s.get("to")), str(s.get("reason")),
                           str(s.get("bag", ""))] for s in switches if isinstance(s, Mapping)],
                         [True, False, False, False, False]))
    rob = _section(metrics, "robustness", Mapping)
    if rob and rob.get("patterns") and rob.get("strategies"):
        header, rows = _robustness_rows(rob, lambda t: Text(t, style="bold"), ("✓", "✗", "?"))
        out.append(table("robustness matrix: mAP (bold: best fixed strategy; auto ✓ within "
                         f"{rob.get('auto_tolerance', AUTO_TOLERANCE):g})", header, rows,
                         [False, False, *([True] * (len(header) - 3)), False]))
    cov = _section(metrics, "robustness_in_coverage", Mapping)
    if cov and cov.get("patterns") and cov.get("strategies"):
        header, rows = _coverage_rows(cov)
        out.append(table("robustness inside the kept sensors' coverage: mAP", header, rows,
                         [False, *([True] * (len(header) - 1))]))
    lat = _section(metrics, "latency_ms", Mapping)
    if lat:
        out.append(table("latency (ms)", ["stage", *LATENCY_KEYS], _latency_rows(lat)))
    faults = _section(metrics, "faults", (list, tuple))
    if faults:
        out.append(table("injected faults", ["sensor", "kind", "from (s)", "to (s)", "mode without it",
                                             *FAULT_HEADERS],
                         [[str(f.get("sensor")), str(f.get("kind")), f.get("t0_s"), f.get("t1_s"),
                           str(f.get("mode_during", "")), *(f.get(k) for k in FAULT_KEYS)]
                          for f in faults if isinstance(f, Mapping)],
                         [False, False, True, True, False, True, True, True, True]))
    for title, sec in _flat_sections(metrics):
        # A nested value (live.startup) is one long "k: v, …" cell: right-justified, it would pad every number
        # of the section to its width; left-justified the column stays readable in a wide CI log.
        nested = any(isinstance(v, (Mapping, list, tuple)) for v in sec.values())
        out.append(table(title, ["item", "value"], [[str(k), _flat_value(v)] for k, v in sec.items()],
                         [False, not nested]))
    return out

