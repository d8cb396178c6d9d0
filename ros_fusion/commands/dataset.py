"""`ros-fusion dataset`: training shards from the simulator (split by seed) or from recorded bags (split by bag)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, fail

if TYPE_CHECKING:  # imported lazily at run time (rich and the package's modules are not needed for --help)
    from rich.progress import Progress

    from ..core.rig import Rig

EXAMPLE = """examples:
  ros-fusion dataset --out data/ --scenarios urban,highway,night_rain \\
      --seeds-train 0-39 --seeds-val 40-44 --seeds-test 100-109 --duration 20
  ros-fusion dataset --out data/small --scenarios urban --seeds-train 0-3 --seeds-val 4 \\
      --seeds-test 100 --duration 10 --stride 2

Writes DIR/<split>/<scenario>_seed<NNNN>.npz (one compressed shard per drive: network
inputs, CenterPoint targets and the ground-truth boxes of every kept LiDAR sweep) and
DIR/manifest.json (scenario, seed, split, frames, sha256 per shard; config hash).
Seed lists are comma-separated numbers or ranges (0-39,50). Splits must not share
seeds: test seeds never reach training. Same arguments, byte-identical shards; a rerun
keeps shards that already match. The shipped model's 6900 frames took ~15 min on
2 cores (docs/model_history.md §2).

From recorded bags (converted real datasets, or simulated drives) instead of the simulator:
  ros-fusion convert kitti --root ~/data/kitti_object --frames 000000-005999 -o bags/train/
  ros-fusion convert kitti --root ~/data/kitti_object --frames 006000-007480 -o bags/val/
  ros-fusion dataset -o data/kitti --train-bags bags/train/*.mcap --val-bags bags/val/*.mcap
  ros-fusion dataset -o data/nusc --train-bags bags/nusc/scene-0061.mcap bags/nusc/scene-0103.mcap \\
      --val-bags bags/nusc/scene-0553.mcap --test-bags bags/nusc/scene-0796.mcap

Every bag is replayed through the same engine and pre-processing as `ros-fusion eval`
(health, synchroniser, ego-motion, FusionPipeline without a model); each bundle with
ground truth on /ground_truth/obstacles becomes a sample (exact stamp, else the nearest
within half a reference period, moved to the bundle time). One shard per bag,
DIR/<split>/<bag stem>_seed<NNNN>.npz, where the seed is the bag's index; the manifest
records each bag's name, sha256 and rig. The rig comes from each bag; all bags must have
the same camera count and fused modalities (one dataset per rig). Labels are indices of
the class list (the converters map dataset classes); other boxes are dropped and counted.
`ros-fusion train --data DIR` and `ros-fusion eval-model --data DIR` read it as they
read a simulated dataset. The bag options exclude --scenarios, --seeds-*, --duration, --rig.
"""

#: Simulator defaults (the options default to None so that a bag run can tell they were not given).
SIM_DEFAULTS = {"scenarios": "urban,highway,night_rain", "seeds_train": "0-39", "seeds_val": "40-44",
                "seeds_test": "100-109", "duration": 20.0}


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' → [0, 1, 2, 3, 7, 10, 11] (empty text → [])."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"bad seed {part!r}: use numbers or ranges like 0-39") from None
        if a < 0 or b < a:
            raise ValueError(f"bad seed range {part!r}: need 0 <= low <= high")
        out.extend(range(a, b + 1))
    if len(set(out)) != len(out):
        raise ValueError(f"seed list {text!r} repeats a seed")
    return out


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dataset",
        help="generate training data (network inputs + targets) from the simulator or from recorded bags",
        description=(
            "Simulate drives for every scenario x seed and, at each LiDAR sweep, build the network inputs "
            "with the same pre-processing the live pipeline uses (LiDAR deskewed, radar Doppler "
            "ego-compensated, camera pose at capture, all from the simulator's true trajectory) and the "
            "CenterPoint targets from ground truth; write them as compressed shards split by seed. "
            "With --train-bags/--val-bags/--test-bags, make the same shards from recorded bags instead "
            "(converted real datasets or simulated drives), one per bag, through the live pipeline's "
            "synchroniser, ego-motion and pre-processing."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="dataset folder (created)")
    d = SIM_DEFAULTS
    sim = p.add_argument_group("from the simulator (the default)")
    sim.add_argument("--scenarios", default=None, metavar="LIST",
                     help=f"comma-separated scenarios (see `ros-fusion simulate --list-scenarios`; "
                          f"default: {d['scenarios']})")
    sim.add_argument("--seeds-train", default=None, metavar="SEEDS",
                     help=f"training seeds, e.g. 0-39 (default: {d['seeds_train']})")
    sim.add_argument("--seeds-val", default=None, metavar="SEEDS",
                     help=f"validation seeds (default: {d['seeds_val']})")
    sim.add_argument("--seeds-test", default=None, metavar="SEEDS",
                     help=f"held-out test seeds (default: {d['seeds_test']})")
    sim.add_argument("--duration", type=float, default=None, metavar="S",
                     help=f"simulated seconds per drive (default: {d['duration']:g})")
    sim.add_argument("--rig", metavar="FILE", default=None,
                     help="rig YAML (default: the package's config/rig_default.yaml)")
    bags = p.add_argument_group("from recorded bags (instead of the simulator)")
    bags.add_argument("--train-bags", nargs="+", type=Path, default=[], metavar="BAG",
                      help="bags (MCAP files or rosbag2 folders) whose samples are for training")
    bags.add_argument("--val-bags", nargs="+", type=Path, default=[], metavar="BAG",
                      help="bags for validation (checkpoint selection)")
    bags.add_argument("--test-bags", nargs="+", type=Path, default=[], metavar="BAG",
                      help="held-out test bags")
    bags.add_argument("--yaw-copies", type=int, default=0, metavar="N",
                      help="also write N copies of every training bag seen from a base_link turned about z by a "
                           "random angle (exact: extrinsics and ground truth turn, the sensor data does not): "
                           "augmentation for a small real dataset; not for rigs with odometry (default: 0)")
    bags.add_argument("--yaw-max-deg", type=float, default=22.5, metavar="DEG",
                      help="largest turn of --yaw-copies, uniform in +-DEG (default: 22.5)")
    p.add_argument("--stride", type=int, default=1, metavar="K",
                   help="keep every K-th LiDAR sweep / every K-th sample of a bag (consecutive sweeps are "
                        "near duplicates)")
    p.add_argument("--force", action="store_true", help="regenerate every shard even if it already matches")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)
    return p


def _progress_bar(quiet: bool) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]dataset[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("frames"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=quiet or not sys.stdout.isatty(),
    )


def run(args: argparse.Namespace) -> int:
    if args.stride < 1:
        return fail("dataset", f"--stride must be >= 1, got {args.stride}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return fail("dataset", f"{out} exists and is not a directory")
    if args.train_bags or args.val_bags or args.test_bags:
        given = [f"--{k.replace('_', '-')}" for k in (*SIM_DEFAULTS, "rig") if getattr(args, k) is not None]
        if given:
            return fail("dataset", f"{', '.join(given)} only apply to simulated data; they cannot be combined "
                                   "with --train-bags/--val-bags/--test-bags")
        return run_from_bags(args, out)
    if args.yaw_copies:
        return fail("dataset", "--yaw-copies turns recorded training bags (--train-bags); the simulator draws "
                               "new drives instead")
    for k, v in SIM_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return run_simulated(args, out)


def run_simulated(args: argparse.Namespace, out: Path) -> int:
    from ..core.rig import ConfigError, load_rig
    from ..core.types import Modality
    from ..paths import default_rig_path
    from ..sim.dataset import check_splits, generate_dataset
    from ..sim.drive import MAX_DURATION_S, list_scenarios

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    known = list_scenarios()
    if not scenarios:
        return fail("dataset", "--scenarios is empty")
    for s in scenarios:
        if s not in known:
            return fail("dataset", f"unknown scenario {s!r}; available: {', '.join(sorted(known))}")
    if not (0 < args.duration <= MAX_DURATION_S):
        return fail("dataset", f"--duration must be in (0, {MAX_DURATION_S:.0f}] seconds, got {args.duration}")
    try:
        splits = {"train": parse_seeds(args.seeds_train), "val": parse_seeds(args.seeds_val),
                  "test": parse_seeds(args.seeds_test)}
        check_splits(splits)
    except ValueError as e:
        return fail("dataset", str(e))
    if not splits["train"] and not splits["val"] and not splits["test"]:
        return fail("dataset", "no seeds given")
    try:
        rig = load_rig(args.rig or default_rig_path())
    except ConfigError as e:
        return fail("dataset", str(e))
    lidars = rig.of(Modality.LIDAR)
    if not lidars:
        return fail("dataset", f"rig {rig.name} has no LiDAR: training frames are triggered by LiDAR sweeps")
    rate = lidars[0].rate_hz
    drives = len(scenarios) * sum(len(v) for v in splits.values())
    expected = int(drives * args.duration * rate / args.stride)

    t0 = time.perf_counter()
    try:
        manifest = _with_progress(args.quiet, expected, lambda on_frame: generate_dataset(
            out, rig, scenarios, splits, float(args.duration), args.stride, progress=on_frame, overwrite=args.force))
    except KeyboardInterrupt:
        return fail("dataset", f"interrupted; finished shards in {out} are kept (rerun to continue)",
                    EXIT_INTERRUPTED)
    except (ValueError, OSError) as e:
        return fail("dataset", str(e), EXIT_ERROR)
    if not args.quiet:
        print(_summary(out, manifest, "shards", time.perf_counter() - t0))
    return EXIT_OK


def _with_progress(quiet: bool, expected: int, work: Callable[[Callable[[int, str], None]], dict]) -> dict:
    """Run `work(on_frame)` under a progress bar over `expected` frames; returns its manifest."""
    progress = _progress_bar(quiet)
    with progress:
        task = progress.add_task("", total=expected)

        def on_frame(done: int, what: str) -> None:
            progress.update(task, completed=done, description=what)

        return work(on_frame)


def _summary(out: Path, manifest: dict, what: str, seconds: float) -> str:
    """The closing line: shards, frames per split, size on disk, time, config hash."""
    n = sum(manifest["frames"].values())
    size = sum((out / s["file"]).stat().st_size for s in manifest["shards"])
    f = manifest["frames"]
    return (f"wrote {out}: {len(manifest['shards'])} {what}, {n} frames (train {f['train']}, val {f['val']}, "
            f"test {f['test']}), {size / 1e6:.1f} MB, {seconds:.0f} s, config {manifest['config_hash']}")


def run_from_bags(args: argparse.Namespace, out: Path) -> int:
    """`--train-bags/--val-bags/--test-bags`: one shard per bag through the live pipeline's pre-processing."""
    from ..bag.errors import BagError
    from ..bag.reader import BagReader
    from ..core.rig import ConfigError
    from ..core.types import RejectedInput
    from ..eval.bag_dataset import bags_to_dataset
    from ..eval.bag_eval import GROUND_TRUTH_TOPIC
    from ..ros.bag_io import read_payloads, read_rig

    bags = {"train": list(args.train_bags), "val": list(args.val_bags), "test": list(args.test_bags)}
    expected = 0
    for bag in (b for v in bags.values() for b in v):
        if not bag.exists():
            return fail("dataset", f"{bag}: no such bag")
        try:
            info = BagReader(bag).topics.get(GROUND_TRUTH_TOPIC)
        except BagError as e:
            return fail("dataset", str(e), EXIT_ERROR)
        if info is None or info.count == 0:
            return fail("dataset", f"{bag}: no {GROUND_TRUTH_TOPIC} messages: training needs annotated recordings "
                                   "(convert a dataset with `ros-fusion convert`, or simulate with ground truth)",
                        EXIT_ERROR)
        expected += -(-info.count // args.stride) * (1 + (args.yaw_copies if bag in bags["train"] else 0))
    if args.yaw_copies < 0 or not 0.0 < args.yaw_max_deg <= 180.0:
        return fail("dataset", f"--yaw-copies must be >= 0 and --yaw-max-deg in (0, 180], got {args.yaw_copies}, "
                               f"{args.yaw_max_deg:g}")
    if args.yaw_copies and not bags["train"]:
        return fail("dataset", "--yaw-copies turns training bags: give --train-bags")

    def rig_of(bag: Path) -> Rig:
        rig = read_rig(bag)
        if rig is None:
            raise ConfigError("rig", "the bag records no rig (/rig topic or rig_yaml metadata); convert or "
                                     "record it with ros-fusion, which stores the rig", str(bag))
        return rig

    rejected: dict[str, int] = {}

    def read(bag: Path) -> Iterator[tuple[str, int, Any]]:
        def on_error(topic: str, t: int, e: Exception) -> None:
            rejected[f"{bag.name}:{topic}"] = rejected.get(f"{bag.name}:{topic}", 0) + 1

        return read_payloads(bag, on_error=on_error)

    t0 = time.perf_counter()
    try:
        manifest = _with_progress(args.quiet, expected, lambda on_frame: bags_to_dataset(
            out, bags, read, rig_of, stride=args.stride, progress=on_frame, overwrite=args.force,
            yaw_copies=args.yaw_copies, yaw_max_deg=args.yaw_max_deg))
    except KeyboardInterrupt:
        return fail("dataset", f"interrupted; finished shards in {out} are kept (rerun to continue)",
                    EXIT_INTERRUPTED)
    except (ConfigError, BagError, RejectedInput, ValueError, OSError) as e:
        return fail("dataset", str(e), EXIT_ERROR)
    if not args.quiet:
        for s in manifest["shards"]:
            st = s.get("stats") or {}
            dropped = {k: st.get(k) for k in ("without_gt", "no_modality", "failed", "boxes_bad_label",
                                              "boxes_non_finite") if st.get(k)}
            note = ("; " + ", ".join(f"{k} {v}" for k, v in dropped.items())) if dropped else ""
            print(f"  {s['file']}: {s['frames']} frames, {s['gt_boxes']} boxes from {s['bag']}{note}")
        for k, v in sorted(rejected.items()):
            print(f"  {k}: {v} message(s) did not decode (skipped)")
        print(_summary(out, manifest, "shards from bags", time.perf_counter() - t0))
    return EXIT_OK
