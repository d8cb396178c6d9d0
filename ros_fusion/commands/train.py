"""`ros-fusion train`: train the fusion network on dataset shards (docs/DESIGN.md §7; docs/model_history.md §2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, HelpFormatter, fail

EXAMPLE = """examples:
  ros-fusion train --data data/ --out runs/fusion --epochs 20
  ros-fusion train --data data/ --out runs/fusion --epochs 20 --resume     # continue after Ctrl-C
  ros-fusion train --synthetic 64 --out runs/smoke --max-steps 30           # toy data: proves the loop runs
  ros-fusion train --data data/ --out runs/ft --init runs/fusion/last.pt --epochs 3 --lr 5e-4 --aux-single camera
      # fine-tune with an extra camera-only loss
  ros-fusion train --data data/ --out runs/gate --init runs/fusion/last.pt --train-only fusion --epochs 3 --lr 1e-3
      # retrain only the gated fusion (adds the gate's scene-wide context to an older checkpoint)
  ros-fusion train --data data/v5 data/sr --out runs/rigs --init runs/fusion/last.pt \
      --train-only radar,fusion,head --epochs 3 --lr 1e-3
      # one set of weights for two rigs: the same drives with a front radar and with five radars

DATA holds train/*.npz and val/*.npz shards (the dataset generator writes them; test seeds
stay out of both). Checkpoints: OUT/last.pt after every epoch (what --resume reads) and
OUT/best.pt (lowest validation loss; what `ros-fusion export` takes). Same seed, same data,
same result. Uses a CUDA GPU when torch sees one (--device cpu to refuse it); CPU threads
default to the cores this process may use.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train the fusion network (needs torch)",
        description=(
            "Train the camera/LiDAR/radar/IMU fusion network on pre-processed dataset shards with "
            "modality dropout over every non-empty subset of camera, LiDAR and radar, AdamW and a "
            "one-cycle or cosine schedule; checkpoints every epoch, resumable, deterministic for a seed."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", type=Path, nargs="+", metavar="DIR",
                   help="dataset folder(s) with train/ and val/ shards; several are pooled (e.g. the same drives "
                        "recorded with two rigs, so one set of weights serves both)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="instead of --data, write N toy samples (N/4 for validation) into OUT/synthetic and train on "
                        "them: a smoke test of the loop, not a model")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for checkpoints (created)")
    p.add_argument("--epochs", type=int, default=20, metavar="N", help="passes over the training shards")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help="samples per optimiser step")
    p.add_argument("--lr", type=float, default=2e-3, metavar="LR", help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=1e-2, metavar="W", help="AdamW weight decay")
    p.add_argument("--schedule", choices=("onecycle", "cosine"), default="onecycle", help="learning-rate schedule")
    p.add_argument("--p-all", type=float, default=0.4, metavar="P",
                   help="probability a sample keeps every modality (else one of the six other non-empty subsets)")
    p.add_argument("--p-no-prev-sweep", type=float, default=0.1, metavar="P",
                   help="probability a sample's previous LiDAR sweep is blanked, as at start-up or after a "
                        "dropped sweep")
    p.add_argument("--p-mirror", type=float, default=0.0, metavar="P",
                   help="probability a sample is mirrored left-right (y -> -y, exact on the rasters): "
                        "augmentation for a small real dataset (0.5 for Astyx; default: off)")
    p.add_argument("--reg-spread", type=float, default=0.0, metavar="W",
                   help="also train the box regression on the 8 cells around each object centre, with this loss "
                        "weight (0.5 for a small real dataset): a heatmap peak one cell off still decodes the right "
                        "box (default: 0, centre cells only)")
    p.add_argument("--precise-bn", type=int, default=300, metavar="N",
                   help="after every epoch, re-estimate BatchNorm statistics over N training batches drawn "
                        "across shards (0: keep the running averages)")
    p.add_argument("--aux-single", default=None, metavar="MODS",
                   help="comma-separated modalities (camera, lidar, radar) whose features alone also go through "
                        "the head every step, with their own loss on their own coverage: more signal for a weak "
                        "encoder than modality dropout gives it (costs one head pass per modality and step; "
                        "default: none)")
    p.add_argument("--aux-weight", type=float, default=0.5, metavar="W",
                   help="weight of each --aux-single loss in the total")
    p.add_argument("--init", type=Path, default=None, metavar="CKPT",
                   help="start from this checkpoint's weights (fine-tuning; same --feat); optimiser and schedule "
                        "start fresh, and the source checkpoint goes into the provenance")
    p.add_argument("--train-only", default=None, metavar="PARTS",
                   help="comma-separated network parts to train (camera, lidar, radar, imu, fusion, head); the "
                        "others keep the --init weights and BatchNorm statistics (default: train everything)")
    p.add_argument("--no-gate-context", action="store_true",
                   help="the purely local gate of models before v8: gates see each cell's features only, not each "
                        "modality's mean feature over its coverage")
    p.add_argument("--until-epoch", type=int, default=None, metavar="N",
                   help="stop after epoch N with the learning-rate schedule still planned for --epochs (continue "
                        "later with --resume)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N optimiser steps")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for weights, shuffling and dropout")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: the cores this process may use)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train")
    p.add_argument("--feat", type=int, default=48, metavar="F", help="BEV feature channels of every modality")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        from ..models.network import NetConfig
        from ..models.train import DataError, TrainConfig, synthetic_shard, train
    except ImportError as e:
        return fail("train", f"training needs torch ({e}); pip install torch==2.13.0", EXIT_ERROR)
    if args.synthetic and args.data:
        return fail("train", "give either --data or --synthetic, not both")
    data = args.data
    if args.synthetic:
        if args.synthetic < 2:
            return fail("train", "--synthetic needs at least 2 samples")
        data = args.out / "synthetic"
        (data / "train").mkdir(parents=True, exist_ok=True)
        (data / "val").mkdir(parents=True, exist_ok=True)
        synthetic_shard(data / "train" / "synthetic_000.npz", args.synthetic, seed=args.seed)
        synthetic_shard(data / "val" / "synthetic_000.npz", max(1, args.synthetic // 4), seed=args.seed + 10_000)
    if data is None:
        return fail("train", "--data DIR is required (or --synthetic N for a smoke run)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            return fail("train", f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.reg_spread <= 1.0:
        return fail("train", f"--reg-spread must be a loss weight in [0, 1], got {args.reg_spread:g}")
    if args.until_epoch is not None and not 1 <= args.until_epoch <= args.epochs:
        return fail("train", f"--until-epoch must be in 1..--epochs ({args.epochs}), got {args.until_epoch}")
    if args.precise_bn < 0:
        return fail("train", "--precise-bn must be 0 or more batches")
    for name in ("p_all", "p_no_prev_sweep", "p_mirror"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            return fail("train", f"--{name.replace('_', '-')} must be a probability in [0, 1]")
    aux_single = tuple(m.strip() for m in (args.aux_single or "").split(",") if m.strip())
    train_only = tuple(m.strip() for m in (args.train_only or "").split(",") if m.strip())
    if train_only and args.init is None:
        return fail("train", "--train-only needs --init CKPT: the parts not trained keep that checkpoint's weights")
    if args.init is not None and not args.init.is_file():
        return fail("train", f"--init {args.init}: no such checkpoint")
    if args.init is not None and args.resume and (args.out / "last.pt").is_file():
        print(f"--resume: continuing {args.out / 'last.pt'}; --init {args.init} only applies to a fresh run")
    datasets = tuple(data) if isinstance(data, list) else (Path(data),)
    cfg = TrainConfig(data=datasets, out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed, p_all=args.p_all,
                      p_no_prev_sweep=args.p_no_prev_sweep, p_mirror=args.p_mirror, reg_spread=args.reg_spread,
                      max_steps=args.max_steps, until_epoch=args.until_epoch, threads=args.threads, device=args.device,
                      precise_bn_batches=args.precise_bn, aux_single=aux_single, aux_weight=args.aux_weight,
                      init=args.init, train_only=train_only,
                      net=NetConfig(feat=args.feat, gate_context=0 if args.no_gate_context else 1),
                      progress=not args.quiet)
    try:
        result = train(cfg, resume=args.resume)
    except (DataError, ValueError, RuntimeError) as e:
        return fail("train", str(e), EXIT_ERROR)
    except KeyboardInterrupt:
        print(f"interrupted; resume with --resume (last complete epoch is in {args.out / 'last.pt'})")
        return EXIT_INTERRUPTED
    h = result["history"]
    if h:
        last = h[-1]
        print(f"{result['parameters']:,} parameters; {last['step']} steps; final val loss {last['val']['total']:.4f}; "
              f"checkpoints in {args.out}")
    return EXIT_OK
