"""Real-data benchmark: the network (each strategy), the geometric detector and their late fusion on real frames.

    .venv/bin/python benchmarks/real_data.py                                  # KITTI frames of ../shared/realdata
    .venv/bin/python benchmarks/real_data.py --astyx ~/data/radar_dataset_astyx  # + the Astyx test split
    .venv/bin/python benchmarks/real_data.py --astyx DIR --astyx-models models/astyx --json out.json

Converts the data with `ros-fusion convert` (cached under --work), runs every configuration through the
offline evaluator (`eval.bag_eval.evaluate_bag`, the code the node runs) and reports, inside the region the
dataset labels (the front camera's view, `eval.real_metrics.camera_view`): car and pedestrian recall within
30 m and 50 m and false cars per frame at each score threshold, and nuScenes-style AP per class (≤ 50 m).

Only the Astyx TEST split (frames 000400-000545) is scored: it and the KITTI frames are never used to train,
select or tune anything (../shared/realdata/README.md). Tables print as Markdown, for the README.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ros_fusion.core.rig import load_rig  # noqa: E402
from ros_fusion.core.types import Modality  # noqa: E402
from ros_fusion.eval.bag_eval import BagEvalConfig, evaluate_bag, parse_drop  # noqa: E402
from ros_fusion.eval.detection_metrics import EvalConfig, evaluate  # noqa: E402
from ros_fusion.eval.real_metrics import in_region, labelled_frames, score_real  # noqa: E402
from ros_fusion.ros.bag_io import read_payloads  # noqa: E402
from ros_fusion.runtime.pipeline import FusionPipeline, PipelineConfig  # noqa: E402

#: The Astyx split: test is reported; val (the last 60 frames of train) is what models are chosen on.
SPLITS = {"test": "000400-000545", "train": "000000-000399", "val": "000340-000399"}
THRESHOLDS = (0.1, 0.3)
RANGES = (30.0, 50.0)
REPORT_CLASSES = ("car", "pedestrian")


@dataclass(frozen=True)
class Variant:
    name: str
    detectors: tuple[str, ...]
    strategy: str = "auto"
    drop: str = ""  # modality left out (robustness rows)


VARIANTS = (
    Variant("network auto", ("network",)),
    Variant("network intermediate", ("network",), "intermediate"),
    Variant("network late", ("network",), "late"),
    Variant("geometric", ("geometric",)),
    Variant("network + geometric", ("network", "geometric")),
)
DROPPED = ("lidar", "radar", "camera")
ROBUSTNESS = tuple(Variant(f"network auto, no {m}", ("network",), drop=m) for m in DROPPED) + \
    tuple(Variant(f"network + geometric, no {m}", ("network", "geometric"), drop=m) for m in DROPPED)


def convert(kind: str, root: Path, out: Path, frames: str | None) -> list[Path]:
    """`ros-fusion convert` once per dataset (kept under --work); the bags it wrote."""
    from ros_fusion.cli import main as cli

    if not any(out.glob("*.mcap")):
        argv = ["convert", kind, "--root", str(root), "-o", str(out), "-q"]
        if frames:
            argv += ["--frames", frames]
        rc = cli(argv)
        if rc:
            raise SystemExit(f"ros-fusion convert {kind} failed (exit {rc})")
    return sorted(out.glob("*.mcap"))


def run_variant(bags: list[Path], variant: Variant, models: Path | None) -> tuple[list, list, dict[str, float]]:
    from ros_fusion.commands.eval import load_model_and_backend

    model, backend = load_model_and_backend(models, "onnxruntime", 2)
    frames, regions, timings = [], [], {}
    for bag in bags:
        rig = load_rig(bag.with_suffix(".rig.yaml"))
        cfg = PipelineConfig.from_manifest(model.raw, strategy=variant.strategy, detectors=variant.detectors)
        pipeline = FusionPipeline(rig, model, backend, cfg)
        drops = []
        if variant.drop:
            names = [s.name for s in rig.of(Modality(variant.drop))]
            if names:
                drops = [parse_drop(",".join(names), rig)]
        run = evaluate_bag(read_payloads(bag), rig, pipeline, BagEvalConfig(robustness=False, drops=drops),
                           name=bag.name)
        f, r = labelled_frames(run.records, rig)
        frames += f
        regions += r
        for rec in run.records:
            for k, v in rec.timings_ms.items():
                timings.setdefault(k, []).append(v)
    import numpy as np

    return frames, regions, {k: float(np.median(v)) for k, v in timings.items()}


def operating_threshold(models: Path | None) -> float | None:
    """The bundle's published operating threshold (manifest `fusion.score_threshold`), if it has one."""
    from ros_fusion.paths import share_dir
    from ros_fusion.runtime.model_bundle import load_bundle

    raw = load_bundle(models if models is not None else share_dir() / "models", verify=False).raw
    op = (raw.get("fusion") or {}).get("score_threshold")
    return None if op is None else float(op)


def score(frames: list, regions: list, classes: tuple[str, ...], thresholds: tuple[float, ...]) -> dict:
    out: dict = {"frames": len(frames)}
    for th in thresholds:
        out[f"{th:g}"] = score_real(frames, classes, regions, score_threshold=th, ranges=RANGES).as_dict()
    scored = [(in_region(gt, reg, 50.0), in_region(pred, reg, 55.0)) for (gt, pred), reg in zip(frames, regions,
                                                                                                  strict=True)]
    rep = evaluate(scored, EvalConfig(classes=classes, empty_class_ap=float("nan")))
    out["AP"] = {c: rep.class_ap(c) for c in classes if rep.n_gt.get(c)}
    out["n_gt"] = {c: n for c, n in rep.n_gt.items() if n}
    return out


def _fmt_recall(d: dict, cls: str, r: float) -> str:
    v = d.get("recall", {}).get(cls, {}).get(f"{r:g}")
    if not v or not v["total"]:
        return "–"
    return f"{v['found']}/{v['total']}"


def markdown(dataset: str, results: dict[str, dict], thresholds: tuple[float, ...], op: float | None) -> str:
    marked = " / ".join(f"{t:g}" + (" (the model's operating threshold)" if t == op else "") for t in thresholds)
    lines = [f"**{dataset}** ({next(iter(results.values()))['frames']} frames; recall and false cars per frame "
             f"at score ≥ {marked}, inside the camera's view)", "",
             "| detector | car ≤ 30 m | car ≤ 50 m | false cars / frame | pedestrian ≤ 30 m | car AP | pedestrian AP |",
             "|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        cells = []
        for cls, r in (("car", 30.0), ("car", 50.0)):
            cells.append(" / ".join(_fmt_recall(res[f"{t:g}"], cls, r) for t in thresholds))
        fp = [res[f"{t:g}"]["false_positives_per_frame"].get("car", 0.0) for t in thresholds]
        cells.append(" / ".join(f"{v:.1f}" for v in fp))
        cells.append(" / ".join(_fmt_recall(res[f"{t:g}"], "pedestrian", 30.0) for t in thresholds))
        ap = res["AP"]
        cells += [f"{ap['car']:.2f}" if "car" in ap else "–", f"{ap['pedestrian']:.2f}" if "pedestrian" in ap else "–"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kitti", type=Path, default=REPO.parent / "shared" / "realdata" / "kitti_object",
                   help="KITTI object layout (default: ../shared/realdata/kitti_object; skipped if absent)")
    p.add_argument("--astyx", type=Path, default=None,
                   help="Astyx HiRes2019 root with the whole set (test split scored)")
    p.add_argument("--astyx-split", choices=tuple(SPLITS), default="test",
                   help="test (the report), train (frames 000000-000399) or val (000340-000399, where the "
                        "shipped Astyx model was chosen): the last two for developing on, never reported as accuracy")
    p.add_argument("--astyx-every", type=int, default=1, metavar="N", help="score every N-th frame only")
    p.add_argument("--models", type=Path, default=None, help="model bundle for KITTI (default: the shipped one)")
    p.add_argument("--astyx-models", type=Path, default=None, help="model bundle for Astyx (default: --models)")
    p.add_argument("--work", type=Path, default=REPO / "build" / "real_data", help="converted bags (cache)")
    p.add_argument("--only", nargs="+", default=[], metavar="ROW",
                   help="detector rows to run, e.g. 'network auto' 'network auto, no lidar' (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    args = p.parse_args(argv)

    datasets = []
    if args.kitti.exists():
        datasets.append(("KITTI frames", convert("kitti", args.kitti, args.work / "kitti", None), args.models, False))
    if args.astyx is not None:
        lo, hi = SPLITS[args.astyx_split].split("-")
        frames = ",".join(f"{i:06d}" for i in range(int(lo), int(hi) + 1, max(1, args.astyx_every)))
        work = args.work / f"astyx_{args.astyx_split}_every{args.astyx_every}"
        bags = convert("astyx", args.astyx, work, frames)
        datasets.append((f"Astyx HiRes2019 {args.astyx_split} split", bags, args.astyx_models or args.models, True))
    if not datasets:
        print("no data: neither --kitti nor --astyx exists", file=sys.stderr)
        return 2
    wanted = {s.strip() for s in args.only if s.strip()}
    everything: dict = {}
    for name, bags, models, robust in datasets:
        op = operating_threshold(models)
        thresholds = tuple(sorted(set(THRESHOLDS) | ({op} if op is not None else set())))
        results: dict[str, dict] = {}
        for v in VARIANTS + (ROBUSTNESS if robust else ()):
            if wanted and v.name not in wanted:
                continue
            t0 = time.perf_counter()
            frames, regions, timings = run_variant(bags, v, models)
            from ros_fusion.core.types import DEFAULT_CLASSES

            results[v.name] = score(frames, regions, DEFAULT_CLASSES, thresholds)
            results[v.name]["median_ms"] = {k: round(t, 2) for k, t in timings.items()
                                            if k == "total" or k.startswith("geometric")}
            print(f"  {name}: {v.name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        everything[name] = {"operating_threshold": op, "rows": results}
        print(markdown(name, results, thresholds, op))
        print()
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
