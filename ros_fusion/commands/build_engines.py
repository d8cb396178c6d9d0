"""`ros-fusion build-engines`: TensorRT engines for a model folder, on the target (docs/DESIGN.md §7)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import EXIT_ERROR, EXIT_OK, HelpFormatter, fail

EXAMPLE = """examples:
  ros-fusion build-engines                                  # models/ of the package, FP16
  ros-fusion build-engines --model-dir models/ --precision int8 --calibration calib.npz
  ros-fusion build-engines --cache-dir /var/cache/ros_fusion/engines

Run it once on the robot (Jetson or desktop GPU) before `ros-fusion launch --backend tensorrt`:
engines are specific to the GPU and TensorRT version. They are cached under a key of ONNX
sha256 + GPU + TensorRT version + precision, so a rebuild happens only when one of those
changes. INT8 calibration reads an .npz of recorded pre-processed frames keyed by input name
(e.g. one dataset shard), each with a leading frame axis. Needs TensorRT and cuda-python.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build-engines",
        help="build (or verify cached) TensorRT engines for a model folder",
        description=(
            "Build one TensorRT engine per network stage from the model folder's ONNX files, after "
            "verifying their sha256 against the manifest, with FP16 and optional INT8 calibration."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                   help="folder with manifest.yaml (default: the package's models/)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16", help="engine precision")
    p.add_argument("--calibration", type=Path, default=None, metavar="NPZ",
                   help="recorded pre-processed frames for INT8 calibration (arrays keyed by input name)")
    p.add_argument("--frames", type=int, default=64, metavar="N", help="calibration frames to use at most")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="engine cache folder (default: MODEL_DIR/engines)")
    p.add_argument("--max-cameras", type=int, default=1, metavar="N", help="largest camera count the engines accept")
    p.set_defaults(func=run)
    return p


def _calibration_frames(path: Path, limit: int) -> dict[str, list[dict[str, np.ndarray]]]:
    from ..runtime.backends import STAGE_IO

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    frames: dict[str, list[dict[str, np.ndarray]]] = {}
    for stage, (names, _) in STAGE_IO.items():
        if all(n in arrays for n in names):
            n = min(limit, min(len(arrays[k]) for k in names))
            frames[stage] = [{k: arrays[k][i : i + 1].astype(np.float32) for k in names} for i in range(n)]
    return frames


def run(args: argparse.Namespace) -> int:
    from ..runtime.backends import BackendUnavailable, EngineProfile, TensorRTBackend
    from ..runtime.model_bundle import BundleError, load_bundle

    model_dir = args.model_dir
    if model_dir is None:
        from ..paths import share_dir

        model_dir = share_dir() / "models"
    if args.precision == "int8" and args.calibration is None:
        return fail("build-engines", "--precision int8 needs --calibration NPZ (recorded frames)")
    try:
        bundle = load_bundle(model_dir)
        calib = _calibration_frames(args.calibration, args.frames) if args.calibration else None
        backend = TensorRTBackend(bundle, precision=args.precision, cache_dir=args.cache_dir,
                                  profile=EngineProfile(max_batch=1, max_cameras=args.max_cameras), calibration=calib)
    except (BundleError, OSError, ValueError) as e:
        return fail("build-engines", str(e), EXIT_ERROR)
    except BackendUnavailable as e:
        return fail("build-engines", str(e), EXIT_ERROR)
    print(backend.describe())
    for stage, path in backend.engine_paths.items():
        print(f"{stage:12s} {path}  {path.stat().st_size / 1e6:.1f} MB")
    return EXIT_OK
