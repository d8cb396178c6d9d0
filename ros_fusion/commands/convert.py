"""`ros-fusion convert {nuscenes,kitti,vod,astyx}`: public datasets → MCAP bags + rig files.

The converters (`ros_fusion.bag.convert_*`) index a dataset into sorted,
lazily-loaded events; this command writes each `ConvertedDrive` with
`ros.bag_io.write_drive` to ``OUT/<name>.mcap`` and its rig next to it as
``OUT/<name>.rig.yaml``, then prints what was skipped, each line naming the
file. Bad files never stop a conversion; only an unusable dataset does (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, fail

if TYPE_CHECKING:
    from ..bag.convert_common import ConvertedDrive

EXAMPLE = """examples:
  ros-fusion convert kitti --root ~/data/kitti_object -o bags/kitti/
  ros-fusion convert kitti --root ~/data/kitti_object --frames 000000-000099 -o bags/kitti/
  ros-fusion convert vod --root ~/data/view_of_delft -o bags/vod/          # root holds lidar/ and radar/
  ros-fusion convert astyx --root ~/data/radar_dataset_astyx -o bags/astyx/   # train and test bags apart
  ros-fusion convert astyx --root ~/data/radar_dataset_astyx --frames 000400-000545 -o bags/astyx_test/
  ros-fusion convert nuscenes --dataroot ~/data/nuscenes --version v1.0-mini -o bags/nusc/
  ros-fusion convert nuscenes --dataroot ~/data/nuscenes --version v1.0-mini --scenes scene-0061 -o bags/nusc/

Each bag OUT/<name>.mcap gets its rig file OUT/<name>.rig.yaml (also embedded in the bag on /rig).
KITTI/VoD: one bag per distinct calibration; base_link = LiDAR axes, origin on the ground below it.
Astyx: one bag per calibration and split (frames 000400-000545 are TEST: never train on them);
base_link = radar (reference) axes, origin on the road below it.
nuScenes: one bag per scene; base_link = nuScenes' ego frame; real timestamps.
Files that cannot be converted (missing calib, truncated .bin, unknown class ...) are listed
at the end, each naming the file; everything else is converted.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert",
        help="convert nuScenes / KITTI / View-of-Delft / Astyx data into bags + rig files",
        description="Convert a public multi-sensor dataset into MCAP bags (sensor messages at their "
        "recorded or synthetic times, ground truth on /ground_truth/obstacles, rig on /rig) plus "
        "rig YAML files that `ros-fusion launch --rig-file` and training accept.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="dataset", metavar="DATASET",
                           help="dataset layout to convert: nuscenes, kitti, vod or astyx")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", metavar="DIR", required=True, help="output folder (created)")
    common.add_argument("--classes", metavar="LIST", default="car,truck,bus,pedestrian,cyclist,barrier",
                        help="comma-separated class list the ground-truth labels index into")
    common.add_argument("--force", action="store_true", help="overwrite existing bags")
    common.add_argument("-q", "--quiet", action="store_true", help="only errors")

    k = sub.add_parser("kitti", parents=[common], formatter_class=HelpFormatter, epilog=EXAMPLE,
                       help="KITTI object layout: training/{velodyne,image_2,calib,label_2}",
                       description="Convert the KITTI object layout (one bag per calibration).")
    k.add_argument("--root", required=True, metavar="DIR", help="folder holding training/ (or the split itself)")
    k.add_argument("--split", default="training", help="split folder under --root")
    k.add_argument("--lidar-height", type=float, default=None, metavar="M",
                   help="LiDAR height above the ground, defines base_link (default: KITTI's 1.73 m)")
    k.add_argument("--frames", metavar="A-B|LIST", default=None,
                   help="only these frames: a range 000000-000099 or a comma list")
    k.set_defaults(func=run)

    v = sub.add_parser("vod", parents=[common], formatter_class=HelpFormatter, epilog=EXAMPLE,
                       help="View-of-Delft: <root>/lidar/training/... + <root>/radar/training/...",
                       description="Convert View-of-Delft (LiDAR, camera, 3+1D radar, poses, labels).")
    v.add_argument("--root", required=True, metavar="DIR", help="folder holding lidar/ and radar/")
    v.add_argument("--split", default="training", help="split folder under lidar/ and radar/")
    v.add_argument("--lidar-height", type=float, default=None, metavar="M",
                   help="LiDAR height above the ground (default: estimated from the labelled boxes)")
    v.add_argument("--frames", metavar="A-B|LIST", default=None,
                   help="only these frames: a range 00000-00099 or a comma list")
    v.set_defaults(func=run)

    a = sub.add_parser("astyx", parents=[common], formatter_class=HelpFormatter, epilog=EXAMPLE,
                       help="Astyx HiRes2019: radar_6455/, lidar_vlp16/, camera_front/, calibration/, ...",
                       description="Convert Astyx HiRes2019 (4D radar, VLP-16, front camera, 3D labels) as still "
                       "frames, one bag per calibration and split. Frames 000400-000545 are the TEST split: they "
                       "convert (into their own bags) for evaluation, never use them for training or tuning.")
    a.add_argument("--root", required=True, metavar="DIR",
                   help="folder holding radar_6455/ etc., or its parent holding dataset_astyx_hires2019/")
    a.add_argument("--ref-height", type=float, default=None, metavar="M",
                   help="height of the reference (radar) frame above the road, defines base_link "
                   "(default: fitted to the road in the LiDAR sweeps)")
    a.add_argument("--frames", metavar="A-B|LIST", default=None,
                   help="only these frames: a range 000400-000545 or a comma list")
    a.set_defaults(func=run)

    n = sub.add_parser("nuscenes", parents=[common], formatter_class=HelpFormatter, epilog=EXAMPLE,
                       help="nuScenes (via nuscenes-devkit): one bag per scene",
                       description="Convert nuScenes scenes: 6 cameras, LIDAR_TOP, 5 radars, IMU (CAN bus), "
                       "odometry (ego poses), annotations. Needs `pip install nuscenes-devkit`.")
    n.add_argument("--dataroot", required=True, metavar="DIR", help="nuScenes root (holds v1.0-*/, samples/, ...)")
    n.add_argument("--version", default="v1.0-mini", help="table version folder")
    n.add_argument("--scenes", nargs="+", metavar="NAME", default=None, help="scene names (default: all)")
    n.set_defaults(func=run)
    p.set_defaults(func=lambda args: fail("convert", "choose a dataset: kitti, vod, astyx or nuscenes (see --help)"))
    return p


def parse_frames(text: str | None) -> list[str] | None:
    """``"000000-000099"`` or ``"1,5,7"`` → frame names (zero padding kept from the range's width)."""
    if not text:
        return None
    if "-" in text and "," not in text:
        a, b = text.split("-", 1)
        if not (a.isdigit() and b.isdigit()) or int(b) < int(a):
            raise ValueError(f"bad frame range {text!r} (use A-B with A <= B)")
        return [str(i).zfill(len(a)) for i in range(int(a), int(b) + 1)]
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not all(t.isdigit() for t in names):
        raise ValueError(f"bad frame list {text!r} (frame numbers separated by commas)")
    return names


def index_dataset(args: argparse.Namespace, classes: list[str]) -> list[ConvertedDrive]:
    if args.dataset == "kitti":
        from ..bag.convert_kitti import KITTI_LIDAR_HEIGHT_M, convert_kitti

        h = args.lidar_height if args.lidar_height is not None else KITTI_LIDAR_HEIGHT_M
        return convert_kitti(args.root, split=args.split, classes=classes, lidar_height=h,
                             frames=parse_frames(args.frames))
    if args.dataset == "vod":
        from ..bag.convert_vod import convert_vod

        return convert_vod(args.root, split=args.split, classes=classes, lidar_height=args.lidar_height,
                           frames=parse_frames(args.frames))
    if args.dataset == "astyx":
        from ..bag.convert_astyx import convert_astyx

        return convert_astyx(args.root, classes=classes, ref_height=args.ref_height,
                             frames=parse_frames(args.frames))
    from ..bag.convert_nuscenes import convert_nuscenes

    return convert_nuscenes(args.dataroot, version=args.version, scenes=args.scenes, classes=classes)


def run(args: argparse.Namespace) -> int:
    from ..bag.convert_common import ConversionError
    from ..bag.errors import BagError
    from ..core.rig import ConfigError
    from ..core.types import RejectedInput

    name = f"convert {args.dataset}"
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if not classes or len(set(classes)) != len(classes):
        return fail(name, f"--classes must be a non-empty list without repeats, got {args.classes!r}")
    out = Path(args.output)
    try:
        drives = index_dataset(args, classes)
    except ConversionError as e:
        return fail(name, str(e), EXIT_ERROR)
    except ValueError as e:
        return fail(name, str(e))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return fail(name, f"cannot create {out}: {e}")
    try:
        written = write_drives(drives, out, overwrite=args.force, quiet=args.quiet)
    except KeyboardInterrupt:
        return fail(name, "interrupted", EXIT_INTERRUPTED)
    except (BagError, ConfigError, RejectedInput, FileExistsError) as e:
        return fail(name, str(e), EXIT_ERROR)
    issues = drives[0].report.lines() if drives else []
    for line in issues:
        print(f"ros-fusion {name}: {line}", file=sys.stderr)
    if not args.quiet:
        for path, n in written:
            print(f"wrote {path} ({n} messages) and {path.stem}.rig.yaml")
        if issues:
            print(f"{len(issues)} file(s) skipped or flagged (listed above); everything else converted")
    return EXIT_OK


def write_drives(drives: list[ConvertedDrive], out: Path, *, overwrite: bool = False,
                 quiet: bool = True) -> list[tuple[Path, int]]:
    """Write every drive as OUT/<name>.mcap + OUT/<name>.rig.yaml; returns (bag path, messages) each."""
    from ..ros.bag_io import write_drive

    done: list[tuple[Path, int]] = []
    for d in drives:
        bag = out / f"{d.name}.mcap"
        rig_path = out / f"{d.name}.rig.yaml"
        if not overwrite and (bag.exists() or rig_path.exists()):
            raise FileExistsError(f"{bag} or {rig_path} already exists (use --force to overwrite)")
        rig = d.rig_object()  # validates the generated rig before anything is written
        for s in d.absent_sensors:
            if not quiet:
                print(f"warning: {d.name}: sensor {s} is in the rig but absent from this recording")
        stats = write_drive(d.events(), bag, rig, metadata=d.bag_metadata(), overwrite=overwrite)
        rig_path.write_text(_rig_header(d) + rig.to_yaml())
        done.append((bag, stats.messages))
    return done


def _rig_header(d: ConvertedDrive) -> str:
    text = str(d.rig.get("rig", {}).get("description", ""))
    lines = ["# Generated by `ros-fusion convert`. Extrinsics are sensor -> base_link 4x4 matrices."]
    lines += [f"# {chunk}" for chunk in _wrap(text, 100)]
    if d.absent_sensors:
        lines.append(f"# Sensors with no data in this recording: {', '.join(d.absent_sensors)}")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) if text else []
