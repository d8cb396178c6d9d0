"""Training data from recorded bags: converted real datasets next to simulated drives.

ROS-free: the caller decodes each bag (`ros.bag_io.read_payloads`) and hands
over ``(topic, log_time_ns, payload)`` in log-time order, plus the bag's rig.

Why not a second pre-processing: the messages go through a model-less
`FusionEngine` + `FusionPipeline` fed exactly as the offline evaluator feeds
them (`eval.bag_eval._Feeder`: recorded log time as the clock, poll timer at
the node's rate). So every sample is the bundle the live node would have
formed, with the sensors its health monitor would have called usable, brought
to the bundle time T by the pipeline's own ego-motion and turned into network
inputs by `FusionPipeline.network_inputs` — the inputs inference computes.
Training data from a bag and inference on that bag cannot drift apart.

Ground truth (`/ground_truth/obstacles`) is matched to a bundle as the evaluator
matches it: exact stamp, else the nearest within half a reference period, moved
to T with ego-motion and each box's velocity. Bundles without ground truth are
not samples (counted). Labels in converted bags are already indices into our
class list (the converters map dataset classes); a box whose label is outside
it, or whose numbers are not finite, is dropped from the sample and counted.

`bags_to_dataset` writes the shards and `manifest.json` of `sim/dataset.py`
(one shard per bag, `scenario` = bag stem, `seed` = the bag's index over all
splits, so seeds are disjoint by construction), so `ros-fusion train` and
`ros-fusion eval-model` read either kind of dataset unchanged. All bags of a
dataset must share a compatible rig (same camera count, same fused modalities):
one network input layout per dataset, and samples that mean the same thing.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import network_io as nio
from ..core.centerhead import encode_obstacles
from ..core.files import sha256_file
from ..core.rig import Rig
from ..core.sync import Bundle
from ..core.types import NS_PER_S, Modality, Obstacles
from ..runtime.engine import EngineSettings, FusionEngine
from ..runtime.pipeline import FusionPipeline
from ..sim.dataset import (
    SPLITS,
    STORAGE,
    DatasetFrame,
    ProgressFn,
    check_splits,
    config_hash,
    frames_to_arrays,
    shard_name,
    write_manifest,
    write_npz_deterministic,
)
from .bag_eval import GROUND_TRUTH_TOPIC, _Feeder, _gt_at, _nearest_gt
from .rig_rotation import copy_angles, rotated_messages, rotated_rig

Message = tuple[str, int, Any]
ReadFn = Callable[[Path], Iterable[Message]]
RigFn = Callable[[Path], Rig]

#: A bundle whose ground truth has not been logged this long after its time T is given up on
#: (bounds the frames held in memory when a recording has gaps in its annotations).
GT_WAIT_S = 2.0
#: Network inputs kept per sample (images are stored separately as uint8 at network resolution).
_INPUT_KEYS = ("lidar_bev", "radar_bev", "cam_grid", "cam_valid", "coverage", "present", "imu")


@dataclass
class BagFrameStats:
    """What happened to one bag's bundles and boxes (filled in while `bag_frames` runs)."""

    messages: int = 0
    bundles: int = 0
    frames: int = 0  # samples yielded
    without_gt: int = 0  # bundles with no ground truth within half a reference period
    skipped_by_stride: int = 0
    no_modality: int = 0  # bundles with ground truth but no usable camera, LiDAR or radar (health): skipped
    failed: int = 0  # bundles the pre-processing refused (malformed data); reason counted in `errors`
    gt_moved: int = 0  # ground truth matched at another stamp, moved to the bundle time
    gt_wrong_frame: int = 0  # ground truth not in the pipeline's frame (base_link): bundle skipped
    boxes: int = 0  # boxes kept
    boxes_bad_label: int = 0  # label not an index of the class list
    boxes_non_finite: int = 0
    unknown_topics: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # engine rejections, "<sensor>:<reason>"
    errors: dict[str, int] = field(default_factory=dict)
    resets: int = 0  # synchroniser resets (a loop or a clock jump in the recording)

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(sorted(v.items())) if isinstance(v, dict) else v) for k, v in asdict(self).items()}


@dataclass
class _Built:
    """A bundle's network inputs, computed when the bundle was emitted, waiting for its ground truth."""

    t_ns: int
    inputs: nio.NetworkInputs


def images_to_u8(images: np.ndarray) -> np.ndarray:
    """Normalised network images (cams, 3, H, W) float32 → (cams, H, W, 3) uint8, the shard's form.

    The exact inverse of `camera_lift.normalise_image` (the float error is far below half a grey
    level), so a shard holds the pixels the network saw. An absent camera slot is all zeros in
    the network input (no real image normalises to exactly 0: 255·mean is never an integer) and
    stays 0 here, as `sim/dataset.py` stores it.
    """
    a = np.asarray(images, np.float32)
    mean = np.asarray(nio.CAM_MEAN, np.float32)[:, None, None]
    std = np.asarray(nio.CAM_STD, np.float32)[:, None, None]
    out = np.clip(np.rint((a * std + mean) * 255.0), 0, 255).astype(np.uint8)
    absent = ~a.reshape(len(a), -1).any(axis=1)
    out[absent] = 0
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def clean_ground_truth(gt: Obstacles, n_classes: int, stats: BagFrameStats) -> Obstacles:
    """`gt` without boxes whose label is not a class index or whose numbers are not finite (counted)."""
    labels = np.asarray(gt.labels)
    good_label = (labels >= 0) & (labels < n_classes)
    finite = np.isfinite(np.asarray(gt.boxes, np.float64)).all(axis=1) if len(gt) else np.zeros(0, bool)
    stats.boxes_bad_label += int((~good_label).sum())
    stats.boxes_non_finite += int((good_label & ~finite).sum())
    keep = good_label & finite
    stats.boxes += int(keep.sum())
    if keep.all():
        return gt
    return gt.subset(keep)


def bag_frames(messages: Iterable[Message], rig: Rig, *, stats: BagFrameStats | None = None,
               settings: EngineSettings | None = None, stride: int = 1,
               n_classes: int = len(nio.CLASSES)) -> Iterator[DatasetFrame]:
    """The training samples of one recording: one `DatasetFrame` per bundle with ground truth.

    `messages`: ``(topic, log_time_ns, payload)`` in log-time order (what `read_payloads`
    yields). `stride`: keep every k-th sample (consecutive sweeps are near duplicates).
    `stats` (optional) is filled in as the bag is read. Raises ValueError for a rig the
    network cannot take (no camera, LiDAR or radar; too many cameras) or a bad `stride`.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    check_rig_for_dataset(rig)  # here, not at the first next(): a bad call fails where it is made
    return _bag_frames(messages, rig, stats if stats is not None else BagFrameStats(), settings, stride, n_classes)


def _bag_frames(messages: Iterable[Message], rig: Rig, st: BagFrameStats, settings: EngineSettings | None,
                stride: int, n_classes: int) -> Iterator[DatasetFrame]:
    pipeline = FusionPipeline(rig, None, None)
    engine = FusionEngine(rig, pipeline, settings or EngineSettings(pipelining=False))
    ref_period_ns = int(NS_PER_S / rig.sensors[engine.reference].rate_hz)
    tol_ns = ref_period_ns // 2
    wait_ns = int(GT_WAIT_S * NS_PER_S)
    gts: dict[int, Obstacles] = {}
    gt_stamps: list[int] = []
    pending: deque[_Built] = deque()
    ready: list[DatasetFrame] = []
    epoch = 0
    with_gt = 0

    def on_bundle(item: tuple[Bundle, set[str]]) -> None:
        nonlocal epoch
        bundle, usable = item
        st.bundles += 1
        if bundle.epoch != epoch:  # what FusionEngine.process does on a synchroniser reset
            epoch = bundle.epoch
            with pipeline.lock:
                pipeline.imu.clear()
            st.resets += 1
        try:
            inputs = pipeline.network_inputs(bundle, usable)
        except ValueError as e:  # RejectedInput included: one malformed bundle is counted, not fatal
            st.failed += 1
            key = type(e).__name__ + (f".{e.reason}" if hasattr(e, "reason") else "")
            st.errors[key] = st.errors.get(key, 0) + 1
            return
        pending.append(_Built(int(bundle.t_ns), inputs))

    def flush(now_ns: int | None) -> None:
        """Turn pending bundles into samples once their ground truth can no longer improve (None: the end)."""
        nonlocal with_gt
        newest = gt_stamps[-1] if gt_stamps else None
        while pending:
            b = pending[0]
            # settled: the exact stamp is here, or GT past the tolerance window (none nearer can come)
            arrived = b.t_ns in gts or (newest is not None and newest >= b.t_ns + tol_ns)
            if now_ns is not None and not arrived and now_ns - b.t_ns <= wait_ns:
                break
            pending.popleft()
            gt = _nearest_gt(gts, gt_stamps, b.t_ns, tol_ns)
            if gt is None:
                st.without_gt += 1
                continue
            if gt.frame_id != pipeline.config.frame_id:
                st.gt_wrong_frame += 1
                continue
            if not b.inputs.arrays["present"].any():  # nothing usable at T: no input to learn from
                st.no_modality += 1
                continue
            if gt.stamp_ns != b.t_ns:
                gt = _gt_at(gt, b.t_ns, pipeline)
                st.gt_moved += 1
            with_gt += 1
            if (with_gt - 1) % stride:
                st.skipped_by_stride += 1
                continue
            gt = clean_ground_truth(gt, n_classes, st)
            targets = encode_obstacles(gt.observed(), pipeline.grid, n_classes)  # as sim/dataset.py
            ready.append(DatasetFrame(b.t_ns, b.inputs, images_to_u8(b.inputs.arrays["images"]), gt, targets))

    def drain() -> Iterator[DatasetFrame]:
        while ready:
            st.frames += 1
            yield ready.pop(0)

    feeder = _Feeder(engine, rig, on_bundle, poll=engine.poll_bundles)
    for topic, log_ns, payload in messages:
        now = int(log_ns)
        st.messages += 1
        feeder.advance(now)
        if topic == GROUND_TRUTH_TOPIC:
            if isinstance(payload, Obstacles):
                gts[int(payload.stamp_ns)] = payload
                gt_stamps.append(int(payload.stamp_ns))
                if len(gt_stamps) > 1 and gt_stamps[-1] < gt_stamps[-2]:  # a loop: keep order for the search
                    gt_stamps.sort()
        else:
            reason = feeder.message(topic, now, payload)
            if reason == "unknown_topic":
                st.unknown_topics[topic] = st.unknown_topics.get(topic, 0) + 1
            elif reason is not None:
                key = f"{feeder.topic_sensor.get(topic, topic)}:{reason}"
                st.rejected[key] = st.rejected.get(key, 0) + 1
        flush(now)
        yield from drain()
    if feeder.next_tick is not None:  # let the last bundles reach their deadlines
        feeder.advance(feeder.next_tick + 2 * ref_period_ns)
    flush(None)
    yield from drain()


# ----------------------------------------------------------------------------- rigs
def check_rig_for_dataset(rig: Rig) -> None:
    """A rig whose bundles the network can take: at least one fused modality, not too many cameras."""
    if not any(rig.of(Modality(m)) for m in nio.FUSED_MODALITIES):
        raise ValueError(f"rig '{rig.name}' has no camera, LiDAR or radar: nothing for the network to fuse")
    n_cam = len(rig.of(Modality.CAMERA))
    if n_cam > nio.MAX_CAMERAS:
        raise ValueError(f"rig '{rig.name}' has {n_cam} cameras; the network takes at most {nio.MAX_CAMERAS}")


def rig_signature(rig: Rig) -> tuple[int, tuple[str, ...]]:
    """What must agree between the bags of one dataset: camera count and the fused modalities present."""
    mods = tuple(m for m in nio.FUSED_MODALITIES if rig.of(Modality(m)))
    return len(rig.of(Modality.CAMERA)), mods


def check_compatible_rigs(rigs: Mapping[Path, Rig]) -> None:
    """Raise ValueError naming the first bag whose rig differs from the first bag's (camera count, modalities)."""
    first: tuple[Path, tuple[int, tuple[str, ...]]] | None = None
    for bag, rig in rigs.items():
        check_rig_for_dataset(rig)
        sig = rig_signature(rig)
        if first is None:
            first = (bag, sig)
            continue
        if sig != first[1]:
            raise ValueError(
                f"{bag}: rig '{rig.name}' has {sig[0]} camera(s) and {'+'.join(sig[1])}, but {first[0]} has "
                f"{first[1][0]} camera(s) and {'+'.join(first[1][1])}: all bags of one dataset need a compatible "
                "rig (make one dataset per rig)")


# ----------------------------------------------------------------------------- whole dataset
def bag_sha256(path: Path) -> str:
    """sha256 of an MCAP file, or of a rosbag2 folder (its files' names and hashes, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such bag")
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _compact(f: DatasetFrame) -> DatasetFrame:
    """A frame in its on-disk dtypes (float images dropped): a long bag's frames then fit in memory."""
    arrays = {k: np.asarray(f.inputs.arrays[k]).astype(STORAGE[k]) for k in _INPUT_KEYS}
    t = f.targets
    t.heatmap = t.heatmap.astype(STORAGE["heatmap_target"])
    t.regression = t.regression.astype(STORAGE["reg_target"])
    t.mask = t.mask.astype(STORAGE["reg_mask"])
    return DatasetFrame(f.stamp_ns, nio.NetworkInputs(arrays), f.images_u8, f.gt, t)


def _bag_lists(bags: Mapping[str, Sequence[str | Path]]) -> list[tuple[str, Path]]:
    """(split, bag) in split order, checked: known splits, at least one bag, no bag in two places."""
    out: list[tuple[str, Path]] = []
    seen: dict[Path, str] = {}
    for split, items in bags.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (one of {SPLITS})")
        if isinstance(items, (str, Path)):
            raise ValueError(f"split {split}: expected a list of bags, got one path {items!r}")
    for split in SPLITS:
        for b in bags.get(split, ()):
            p = Path(b)
            if not p.exists():
                raise ValueError(f"{p}: no such bag")
            key = p.resolve()
            if key in seen:
                raise ValueError(f"{p} is given twice ({seen[key]} and {split}): a bag belongs to one split")
            seen[key] = split
            out.append((split, p))
    if not out:
        raise ValueError("no bags given")
    return out


def bags_to_dataset(out_dir: str | Path, bags: Mapping[str, Sequence[str | Path]], read_fn: ReadFn,
                    rig_fn: RigFn, *, stride: int = 1, settings: EngineSettings | None = None,
                    progress: ProgressFn | None = None, overwrite: bool = False, yaw_copies: int = 0,
                    yaw_max_deg: float = 22.5) -> dict:
    """Write one shard per bag (`sim/dataset.py` format) and `manifest.json`; return the manifest.

    `yaw_copies`: also write that many copies of every *training* bag seen from a base_link turned by
    an angle uniform in ±`yaw_max_deg` (`rig_rotation`; deterministic per bag), one shard each.

    `bags`: split → bag paths. `read_fn(bag)` yields its decoded messages, `rig_fn(bag)` its rig
    (raise for a bag without one). Every rig is read and checked for compatibility before any
    bag is converted. `progress(frames_done, description)` is called after every sample.
    Shards that already match (same config hash, which covers every bag's sha256) are kept
    unless `overwrite`. Raises ValueError naming the bag for an incompatible rig or a bag
    that yields no sample with ground truth.
    """
    items = _bag_lists(bags)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    rigs = {bag: rig_fn(bag) for _, bag in items}
    check_compatible_rigs(rigs)
    shas = {bag: bag_sha256(bag) for _, bag in items}
    seeds = {bag: i for i, (_, bag) in enumerate(items)}
    check_splits({s: [seeds[b] for sp, b in items if sp == s] for s in SPLITS})
    # (split, bag, rig, yaw or None, shard stem, seed): the recordings, then their turned training copies (rigs
    # turned here, so a rig with odometry is refused before any shard is written; copies get seeds after the
    # recordings': a seed names one shard)
    jobs: list[tuple[str, Path, Rig, float | None, str, int]] = [(sp, b, rigs[b], None, b.stem, seeds[b])
                                                                for sp, b in items]
    for sp, b in items:
        if sp == "train" and yaw_copies:
            for k, theta in enumerate(copy_angles(shas[b], yaw_copies, yaw_max_deg)):
                jobs.append((sp, b, rotated_rig(rigs[b], theta), theta, f"{b.stem}_yaw{k}", len(jobs)))
    _, cfg = config_hash(rigs[items[0][1]], 0.0, stride)
    cfg.pop("duration_s")
    cfg.update(source="bags", rig=[rigs[b].to_yaml() for _, b in items],
               bags=[[split, b.name, shas[b]] for split, b in items])
    if yaw_copies:
        cfg.update(yaw_copies=int(yaw_copies), yaw_max_deg=float(yaw_max_deg))
    chash = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=list).encode()).hexdigest()[:16]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    old: dict[str, dict] = {}
    if mpath.exists() and not overwrite:
        try:
            prev = json.loads(mpath.read_text())
        except (OSError, ValueError):
            prev = {}
        if isinstance(prev, dict) and prev.get("config_hash") == chash:
            old = {s["file"]: s for s in prev.get("shards", []) if isinstance(s, dict) and "file" in s}
    shards = []
    done = 0
    for split, bag, rig, theta, stem, seed in jobs:
        name = shard_name(split, stem, seed)
        path = out / name
        path.parent.mkdir(exist_ok=True)
        if name in old and path.exists() and sha256_file(path) == old[name].get("sha256"):
            shards.append(old[name])
            done += int(old[name].get("frames", 0))
            if progress:
                progress(done, f"{split} {bag.name} (kept)")
            continue
        stats = BagFrameStats()
        frames = []
        messages = read_fn(bag) if theta is None else rotated_messages(read_fn(bag), GROUND_TRUTH_TOPIC, theta)
        for f in bag_frames(messages, rig, stats=stats, settings=settings, stride=stride):
            frames.append(_compact(f))
            done += 1
            if progress:
                progress(done, f"{split} {bag.name}")
        if not frames:
            raise ValueError(f"{bag}: no bundle with ground truth ({stats.bundles} bundles, {stats.messages} "
                             f"messages, {stats.without_gt} without ground truth on {GROUND_TRUTH_TOPIC}): "
                             "only annotated recordings make training data")
        meta = {"scenario": stem, "seed": seed, "split": split, "config_hash": chash, "stride": stride,
                "rig": rig.name, "bag": bag.name, "bag_sha256": shas[bag], "source": "bag"}
        turned = {} if theta is None else {"yaw_deg": round(float(np.rad2deg(theta)), 3)}
        write_npz_deterministic(path, frames_to_arrays(frames, meta | turned))
        shards.append({"file": name, "split": split, "scenario": stem, "seed": seed, "frames": len(frames),
                       "sha256": sha256_file(path), "gt_boxes": int(sum(len(f.gt) for f in frames)),
                       "bag": bag.name, "bag_sha256": shas[bag], "rig": rig.name, **turned,
                       "stats": stats.to_dict()})
    rig_names = list(dict.fromkeys(r.name for r in rigs.values()))
    return write_manifest(out, chash, shards, {
        "source": "bags",
        "rig": ",".join(rig_names),
        "stride": stride,
        "scenarios": list(dict.fromkeys(b.stem for _, b in items)),
        "splits": {s: [seeds[b] for sp, b in items if sp == s] for s in SPLITS},
        "bags": [{"split": s, "bag": b.name, "path": str(b), "sha256": shas[b], "seed": seeds[b],
                  "rig": rigs[b].name} for s, b in items],
    })


__all__ = ["BagFrameStats", "bag_frames", "bag_sha256", "bags_to_dataset", "check_compatible_rigs",
           "check_rig_for_dataset", "clean_ground_truth", "images_to_u8", "rig_signature"]
