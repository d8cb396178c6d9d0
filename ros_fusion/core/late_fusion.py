"""Late fusion: per-modality detections moved to the fusion time T and merged (docs/DESIGN.md §8).

Why it exists: when a required modality is stale, missing or too far out of
sync, one gated-fusion forward pass at T would mix features of different
instants. `late` mode instead lets every modality detect at its own capture
stamp t_m (boxes in base_link at t_m), then

1. `move_to_time` carries those boxes to base_link at T: the ego-motion part
   comes from `PoseHistory.relative_pose(t_m, T)` and the object's own motion
   from its velocity over ground times ``T - t_m``;
2. `weighted_box_fusion` merges the modalities class-aware, with weighted box
   fusion (Solovyev et al. 2021, "Weighted boxes fusion: ensembling boxes from
   different object detection models") adapted to BEV centre distance and to
   sensors with different fields of view;
3. `ScoreCalibration` (Platt scaling, one per modality) is applied to scores
   first, because each modality's head is over- or under-confident in its own
   way and a mean of uncalibrated scores would favour the boldest head.

Everything is numpy + the rest of `ros_fusion.core`, so the live node, the
offline evaluator and the tests run the same code without ROS.

Non-finite input is *rejected* (ValueError), never silently dropped: the
caller decides what a NaN box means and counts it; `drop_non_finite` is the
helper for callers that want to filter and count before fusing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .network_io import FUSED_MODALITIES
from .transforms import wrap_angle
from .types import BOX_DIM, DEFAULT_CLASSES, NS_PER_S, Obstacles

#: Default BEV cluster radius per class (metres): vehicles are long, so two
#: modalities' centres of one car can differ by more than a pedestrian's size.
DEFAULT_RADIUS_M: dict[str, float] = {
    "car": 2.0,
    "truck": 2.0,
    "bus": 2.0,
    "pedestrian": 1.0,
    "cyclist": 1.0,
    "barrier": 1.0,
}

SCORE_MODES: tuple[str, ...] = ("wbf", "noisy_or")

#: Scores are clipped to [eps, 1 - eps] before the logit so 0 and 1 stay finite.
_LOGIT_EPS = 1e-7
#: Tolerance on the rotation part of a pose (orthonormality, det = +1).
_ROT_TOL = 1e-3

# ----------------------------------------------------------------------------------- validation


def _check_stamp(stamp_ns: object, name: str = "stamp_ns") -> int:
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
        raise ValueError(f"{name} must be an integer number of nanoseconds, got {stamp_ns!r}")
    return int(stamp_ns)


def _check_obstacles(obs: object, name: str, n_classes: int | None = None) -> Obstacles:
    """Validate an Obstacles' array shapes and values; raises ValueError naming `name` and the field."""
    if not isinstance(obs, Obstacles):
        raise ValueError(f"{name}: expected Obstacles, got {type(obs).__name__}")
    if not isinstance(obs.frame_id, str):
        raise ValueError(f"{name}: frame_id must be a str, got {type(obs.frame_id).__name__}")
    boxes = np.asarray(obs.boxes)
    if boxes.ndim != 2 or boxes.shape[1] != BOX_DIM:
        raise ValueError(f"{name}: boxes must be (N, {BOX_DIM}), got shape {boxes.shape}")
    n = boxes.shape[0]
    scores = np.asarray(obs.scores)
    labels = np.asarray(obs.labels)
    weights = np.asarray(obs.weights)
    if scores.shape != (n,):
        raise ValueError(f"{name}: scores must be ({n},) to match boxes, got shape {scores.shape}")
    if labels.shape != (n,):
        raise ValueError(f"{name}: labels must be ({n},) to match boxes, got shape {labels.shape}")
    if weights.shape != (n, 3):
        raise ValueError(f"{name}: weights must be ({n}, 3) to match boxes, got shape {weights.shape}")
    for arr, what in ((boxes, "boxes"), (scores, "scores"), (weights, "weights")):
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name}: {what} must be real numbers, got dtype {arr.dtype}")
    if not np.all(np.isfinite(boxes)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(boxes), axis=1)))
        raise ValueError(f"{name}: {bad} box(es) with non-finite values (filter them first, e.g. drop_non_finite)")
    if not np.all(np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
        raise ValueError(f"{name}: scores must be finite and in [0, 1]")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"{name}: weights must be finite")
    if np.issubdtype(labels.dtype, np.integer):
        pass
    elif np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.rint(labels)):
            raise ValueError(f"{name}: labels must be integer class indices")
    else:
        raise ValueError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}")
    if n and labels.min() < 0:
        raise ValueError(f"{name}: labels must be >= 0, got {int(labels.min())}")
    if n_classes is not None and n and labels.max() >= n_classes:
        raise ValueError(f"{name}: label {int(labels.max())} out of range for {n_classes} classes")
    return obs


def _check_pose(relative_pose: object) -> np.ndarray:
    if not _is_real_array(relative_pose):
        raise ValueError("relative_pose must be a real 4x4 matrix")
    pose = np.asarray(relative_pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"relative_pose must be 4x4, got shape {pose.shape}")
    if not np.all(np.isfinite(pose)):
        raise ValueError("relative_pose has non-finite values")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise ValueError(f"relative_pose bottom row must be [0 0 0 1], got {pose[3].tolist()}")
    R = pose[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=_ROT_TOL) or np.linalg.det(R) < 0:
        raise ValueError("relative_pose rotation part is not a proper rotation (R^T R != I or det < 0)")
    return pose


def _is_real_array(x: object) -> bool:
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        return False
    return np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)


def drop_non_finite(obs: Obstacles) -> tuple[Obstacles, int]:
    """Rows with any non-finite box/score/weight removed, and how many were removed.

    For callers that want to count and drop bad detections before `move_to_time`
    / `weighted_box_fusion` (which reject them rather than guess).
    """
    boxes = np.asarray(obs.boxes)
    scores = np.asarray(obs.scores)
    weights = np.asarray(obs.weights)
    labels = np.asarray(obs.labels)
    n = len(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != BOX_DIM:
        raise ValueError(f"drop_non_finite: boxes must be (N, {BOX_DIM}), got shape {boxes.shape}")
    if scores.shape != (n,) or labels.shape != (n,) or weights.shape != (n, 3):
        raise ValueError(f"drop_non_finite: scores/labels/weights must be ({n},)/({n},)/({n}, 3)")
    keep = np.all(np.isfinite(boxes), axis=1) & np.isfinite(scores) & np.all(np.isfinite(weights), axis=1)
    out = Obstacles(obs.stamp_ns, obs.frame_id, boxes[keep].copy(), scores[keep].copy(), labels[keep].copy(),
                    weights[keep].copy())
    return out, int(np.count_nonzero(~keep))


# ----------------------------------------------------------------------------------- move to T


def move_to_time(obs: Obstacles, relative_pose: np.ndarray, dt_s: float, stamp_ns: int) -> Obstacles:
    """Boxes detected in base_link at t_m, carried to base_link at T.

    `relative_pose` is base_link(t_m) -> base_link(T) (``PoseHistory.relative_pose(t_m, T)``)
    and `dt_s` = (T - t_m) in seconds. Per box:

    - centre ``c' = R c + t`` (full 3D rotation: a pitched ego changes z too);
    - yaw: the heading (cos, sin, 0) is rotated by R and projected on the xy
      plane (yaw = atan2 of its y, x), wrapped to [-pi, pi);
    - velocity (vx, vy, 0) is rotated by R; its xy part is kept (boxes carry no vz);
    - then ``c' += v' * dt_s``: the velocity is over ground, so this is the
      object's own motion on top of the ego-motion in the pose.

    Doing the rotation before the advance makes moves compose: moving by A over
    dt1 then by B over dt2 equals moving by ``B @ A`` over dt1 + dt2 (exactly for
    rotations about z; for roll/pitch the yaw/velocity projection loses the
    z components, so only the centre composes exactly).

    Sizes, scores, labels, weights and num_points are unchanged; the result is float32 and
    stamped `stamp_ns` in the input's frame_id. Raises ValueError on bad shapes,
    non-finite boxes, a non-finite or non-rigid pose or a non-finite dt.
    """
    _check_obstacles(obs, "obs")
    pose = _check_pose(relative_pose)
    if isinstance(dt_s, bool) or not isinstance(dt_s, (int, float, np.integer, np.floating)):
        raise ValueError(f"dt_s must be a real number of seconds, got {dt_s!r}")
    dt = float(dt_s)
    if not math.isfinite(dt):
        raise ValueError(f"dt_s must be finite, got {dt_s!r}")
    stamp = _check_stamp(stamp_ns)

    boxes = np.asarray(obs.boxes, dtype=np.float64)
    R = pose[:3, :3]
    out = boxes.copy()
    yaw = boxes[:, 6]
    heading = np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], axis=1) @ R.T
    vel = np.stack([boxes[:, 7], boxes[:, 8], np.zeros(len(boxes))], axis=1) @ R.T
    out[:, 0:3] = boxes[:, 0:3] @ R.T + pose[:3, 3]
    out[:, 0:2] += vel[:, 0:2] * dt
    out[:, 6] = wrap_angle(np.arctan2(heading[:, 1], heading[:, 0]))
    out[:, 7:9] = vel[:, 0:2]
    return Obstacles(
        stamp,
        obs.frame_id,
        out.astype(np.float32),
        np.array(obs.scores, dtype=np.float32, copy=True),
        np.asarray(obs.labels).astype(np.int32),
        np.array(obs.weights, dtype=np.float32, copy=True),
        None if obs.num_points is None else np.array(obs.num_points, copy=True),
    )


def dt_seconds(t_from_ns: int, t_to_ns: int) -> float:
    """(t_to - t_from) in seconds, computed in integers first so large stamps keep ns precision."""
    return (_check_stamp(t_to_ns, "t_to_ns") - _check_stamp(t_from_ns, "t_from_ns")) / NS_PER_S


# ----------------------------------------------------------------------------------- calibration


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so neither branch overflows exp().
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _check_scores(scores: object, name: str = "scores") -> np.ndarray:
    if not _is_real_array(scores):
        raise ValueError(f"{name} must be an array of real numbers")
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any((s < 0) | (s > 1)):
        raise ValueError(f"{name} must be finite and in [0, 1]")
    return s


@dataclass(frozen=True)
class ScoreCalibration:
    """Platt scaling of one modality's scores: ``p = sigmoid(a * logit(s) + b)``.

    Why: each modality's detector head is confident in its own way (a radar head
    saying 0.6 may be right as often as a camera head saying 0.9); WBF averages
    and noisy-or combine scores across modalities, which only means something
    when a score is a probability of being a true positive. Fitted per modality
    with `fit_platt` on validation detections matched to ground truth; stored in
    the model manifest via `to_dict`/`from_dict`. The defaults (a=1, b=0) are the
    identity. a < 0 would invert the ranking and is allowed but unusual.
    """

    a: float = 1.0
    b: float = 0.0

    def __post_init__(self) -> None:
        for key in ("a", "b"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"ScoreCalibration.{key} must be a real number, got {v!r}")
            if not math.isfinite(float(v)):
                raise ValueError(f"ScoreCalibration.{key} must be finite, got {v!r}")
            object.__setattr__(self, key, float(v))

    @property
    def is_identity(self) -> bool:
        return self.a == 1.0 and self.b == 0.0

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated scores, same shape, float32 (float64 if the input is float64).

        The identity returns the scores unchanged (bit for bit), so an
        uncalibrated modality costs nothing and loses nothing to the clipping.
        """
        s = _check_scores(scores)
        dtype = np.float64 if s.dtype == np.float64 else np.float32
        if self.is_identity:
            return s.astype(dtype, copy=True)
        p = _sigmoid(self.a * _logit(s.astype(np.float64)) + self.b)
        return p.astype(dtype)

    def to_dict(self) -> dict[str, float]:
        return {"a": float(self.a), "b": float(self.b)}

    @staticmethod
    def from_dict(d: Mapping[str, object]) -> ScoreCalibration:
        """Inverse of `to_dict`; rejects missing/unknown keys and non-finite or non-numeric values."""
        if not isinstance(d, Mapping):
            raise ValueError(f"ScoreCalibration.from_dict expects a mapping, got {type(d).__name__}")
        keys = set(d)
        missing = {"a", "b"} - keys
        extra = keys - {"a", "b"}
        if missing:
            raise ValueError(f"ScoreCalibration: missing key(s) {sorted(missing)}")
        if extra:
            raise ValueError(f"ScoreCalibration: unknown key(s) {sorted(map(str, extra))}")
        return ScoreCalibration(a=d["a"], b=d["b"])  # type: ignore[arg-type]


def fit_platt(
    scores: np.ndarray,
    is_tp: np.ndarray,
    iters: int = 100,
    l2: float = 1e-2,
    tol: float = 1e-10,
) -> ScoreCalibration:
    """Fit `ScoreCalibration` (a, b) by logistic regression on logit(score).

    Newton's method (IRLS) on the negative log-likelihood plus ``l2/2 *
    ((a - 1)^2 + b^2)``: the penalty pulls towards the identity, so separable
    data (every TP scored above every FP, where the unpenalised optimum is
    a -> infinity) still gives a finite answer, and few samples barely move the
    calibration. Each Newton step is halved until the objective decreases, so
    the fit cannot oscillate. `is_tp` is bool (or 0/1) per score.
    """
    s = _check_scores(scores)
    y_arr = np.asarray(is_tp)
    if y_arr.shape != s.shape:
        raise ValueError(f"is_tp must have the shape of scores {s.shape}, got {y_arr.shape}")
    if y_arr.dtype != bool:
        if not _is_real_array(y_arr) or not np.all(np.isin(y_arr, (0, 1))):
            raise ValueError("is_tp must be bool or 0/1")
    if len(s) == 0:
        raise ValueError("fit_platt needs at least one sample")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    if isinstance(l2, bool) or not isinstance(l2, (int, float, np.integer, np.floating)) or not (
        math.isfinite(float(l2)) and l2 > 0
    ):
        raise ValueError(f"l2 must be finite and > 0, got {l2!r}")
    y = y_arr.astype(np.float64)
    x = _logit(s.astype(np.float64))
    X = np.stack([x, np.ones_like(x)], axis=1)
    prior = np.array([1.0, 0.0])

    def objective(theta: np.ndarray) -> float:
        z = X @ theta
        # -log-likelihood = sum(log(1 + e^z) - y z), log1p(e^z) computed stably.
        nll = float(np.sum(np.logaddexp(0.0, z) - y * z))
        return nll + 0.5 * l2 * float(np.sum((theta - prior) ** 2))

    theta = prior.copy()
    f = objective(theta)
    for _ in range(iters):
        p = _sigmoid(X @ theta)
        grad = X.T @ (p - y) + l2 * (theta - prior)
        H = (X * (p * (1.0 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(H, grad)
        t = 1.0
        cand, fc = theta - step, objective(theta - step)
        while fc > f and t > 1e-8:
            t *= 0.5
            cand = theta - t * step
            fc = objective(cand)
        if fc > f:  # no descent left along the Newton direction: at the optimum up to rounding
            break
        converged = f - fc <= tol * max(1.0, abs(f))
        theta, f = cand, fc
        if converged:
            break
    if not np.all(np.isfinite(theta)):  # pragma: no cover - the penalty keeps it finite
        raise ValueError("fit_platt did not converge to finite parameters")
    return ScoreCalibration(a=float(theta[0]), b=float(theta[1]))


# ----------------------------------------------------------------------------------- WBF


@dataclass
class WbfConfig:
    """Weighted-box-fusion settings.

    radius_m: BEV cluster radius (m), one float for all classes or a dict by
        class name that must cover every name in `classes` (extra names are
        ignored, so the default table works for any subset of the default classes).
    classes: class names; a label is an index into this tuple.
    score_mode: ``"wbf"`` = mean member score x n_contributing / n_expected
        (Solovyev et al.: a box seen by fewer of the modalities that could have
        seen it is less likely real); ``"noisy_or"`` = 1 - prod(1 - s_m) over the
        best score of each contributing modality (independent evidence).
    min_score: fused boxes scoring below it are dropped.
    align_flipped_yaw: before averaging yaw, a member whose heading is more
        than 90 deg from the cluster's best-scoring member is turned by pi.
        Why: detectors (camera especially) often get the box right but the
        heading backwards; averaging 0 and pi would give a sideways box.
    """

    radius_m: dict[str, float] | float = field(default_factory=lambda: dict(DEFAULT_RADIUS_M))
    classes: tuple[str, ...] = DEFAULT_CLASSES
    score_mode: str = "wbf"
    min_score: float = 0.0
    align_flipped_yaw: bool = True

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        if not classes or not all(isinstance(c, str) and c for c in classes):
            raise ValueError(f"WbfConfig.classes must be a non-empty tuple of names, got {self.classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"WbfConfig.classes has duplicates: {classes}")
        self.classes = classes
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"WbfConfig.score_mode must be one of {SCORE_MODES}, got {self.score_mode!r}")
        ms = self.min_score
        if isinstance(ms, bool) or not isinstance(ms, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(ms)) and 0.0 <= float(ms) <= 1.0
        ):
            raise ValueError(f"WbfConfig.min_score must be a number in [0, 1], got {ms!r}")
        if isinstance(self.radius_m, Mapping):
            missing = [c for c in classes if c not in self.radius_m]
            if missing:
                raise ValueError(f"WbfConfig.radius_m has no radius for class(es) {missing}")
            for c in classes:
                self._check_radius(self.radius_m[c], c)
        else:
            self._check_radius(self.radius_m, "all classes")

    @staticmethod
    def _check_radius(r: object, what: str) -> None:
        if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(r)) and float(r) > 0
        ):
            raise ValueError(f"WbfConfig.radius_m for {what} must be a finite number > 0, got {r!r}")

    def radii(self) -> np.ndarray:
        """(len(classes),) cluster radius per class index."""
        if isinstance(self.radius_m, Mapping):
            return np.array([float(self.radius_m[c]) for c in self.classes])
        return np.full(len(self.classes), float(self.radius_m))


#: Source name of the network's intermediate-fusion output when it is merged with other detectors.
FUSED_SOURCE = "fused"


def source_modality(source: object) -> str | None:
    """The modality a detection source stands for: ``lidar`` and ``lidar.geometric`` → ``lidar``;
    ``fused`` (the network's output at T, already attributed by its gates) → None.

    Why sources, not modalities: the geometric detector and the network both see the LiDAR; merging them as
    one modality would average a confident geometric box with a timid network one, while as two sources
    each counts as one opinion (wbf score) and both are attributed to the LiDAR.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"source name must be a non-empty string, got {source!r}")
    base, _, detector = source.partition(".")
    if "." in source and not detector:
        raise ValueError(f"source {source!r} has an empty detector name")
    if base == FUSED_SOURCE:
        return None
    if base not in FUSED_MODALITIES:
        raise ValueError(f"unknown source {source!r} (a modality of {FUSED_MODALITIES}, <modality>.<detector> "
                         f"or {FUSED_SOURCE!r})")
    return base


def source_order(sources: Iterable[str]) -> list[str]:
    """Canonical order of sources: ``fused`` first, then by modality (FUSED_MODALITIES order), then by name."""
    def key(name: str) -> tuple[int, str]:
        m = source_modality(name)
        return (-1 if m is None else FUSED_MODALITIES.index(m), name)

    return sorted(sources, key=key)


def _attribution_rows(source: str, obs: Obstacles, n_mod: int) -> np.ndarray:
    """(N, n_mod) share of each member's score credited to each modality: one-hot for a modality's source,
    the member's own gate weights (normalised; equal shares if they are all zero) for ``fused``."""
    n = len(obs.boxes)
    m = source_modality(source)
    if m is not None:
        rows = np.zeros((n, n_mod))
        rows[:, FUSED_MODALITIES.index(m)] = 1.0
        return rows
    w = np.clip(np.asarray(obs.weights, np.float64).reshape(n, n_mod), 0.0, None)
    total = w.sum(axis=1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / n_mod)


def weighted_box_fusion(
    dets: Mapping[str, Obstacles],
    stamp_ns: int,
    config: WbfConfig | None = None,
    expected: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    calibration: Mapping[str, ScoreCalibration] | None = None,
) -> Obstacles:
    """Merge per-modality detections (all already at T, same frame) into one set.

    dets: source name (`source_modality`: a modality of FUSED_MODALITIES, a
        modality's other detector such as ``lidar.geometric``, or ``fused`` for
        the network's intermediate-fusion output) -> Obstacles stamped `stamp_ns`
        (run `move_to_time` first; a different stamp is rejected so boxes from
        another instant cannot slip in). A source present with zero boxes still
        counts as "could have seen it" for the wbf score.
    expected: optional source -> fov(xy (K, 2)) -> (K,) bool. n_expected of a
        cluster = sources in `dets` whose fov contains the fused centre (a
        source without a function sees everywhere), at least n_contributing
        and at least 1. Without it, n_expected = len(dets). This keeps a camera-
        only box outside LiDAR/radar coverage from being penalised for their absence.
    calibration: optional source -> ScoreCalibration, applied to scores first;
        the calibrated scores are used everywhere below.

    Per class, boxes of all sources are visited by score descending (ties:
    source in `source_order`, then box coordinates, then index, so
    shuffling the input does not change the output); each joins the first
    cluster whose current score-weighted centre is within the class radius
    (BEV xy distance <= radius), else founds a new one. Fused box = score-
    weighted mean of x y z l w h vx vy over all members (same-modality duplicates
    included); yaw = atan2 of the score-weighted mean (sin, cos), after the
    optional pi-flip alignment to the founder (best-scoring member). Weights =
    each modality's share of the cluster's score mass (FUSED_MODALITIES order,
    rows sum to 1; by member count if every score is 0): a member of a modality's
    source counts wholly for that modality, a ``fused`` member by its own
    (normalised) gate weights. Output is sorted by fused score descending,
    clusters below config.min_score dropped.

    Raises ValueError for an unknown source, mismatched frame_id or stamp,
    wrong shapes, non-finite boxes, scores outside [0, 1] or labels outside the classes.
    """
    cfg = config if config is not None else WbfConfig()
    if not isinstance(cfg, WbfConfig):
        raise ValueError(f"config must be a WbfConfig, got {type(cfg).__name__}")
    stamp = _check_stamp(stamp_ns)
    if not isinstance(dets, Mapping):
        raise ValueError(f"dets must be a mapping source -> Obstacles, got {type(dets).__name__}")
    n_classes = len(cfg.classes)
    for name, mapping in (("dets", dets), ("expected", expected or {}), ("calibration", calibration or {})):
        for m in mapping:
            try:
                source_modality(m)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
    frames = set()
    for m, obs in dets.items():
        _check_obstacles(obs, f"dets[{m!r}]", n_classes)
        frames.add(obs.frame_id)
        if _check_stamp(obs.stamp_ns, f"dets[{m!r}].stamp_ns") != stamp:
            raise ValueError(
                f"dets[{m!r}] is stamped {obs.stamp_ns}, not the fusion time {stamp}: move it with move_to_time first"
            )
    if len(frames) > 1:
        raise ValueError(f"dets have different frame_ids {sorted(frames)}; fuse in one frame")
    frame_id = frames.pop() if frames else "base_link"
    for m, fn in (expected or {}).items():
        if not callable(fn):
            raise ValueError(f"expected[{m!r}] must be callable xy -> bool mask")
    for m, cal in (calibration or {}).items():
        if not isinstance(cal, ScoreCalibration):
            raise ValueError(f"calibration[{m!r}] must be a ScoreCalibration, got {type(cal).__name__}")

    # Gather every box in one table, sources in canonical order (not dict order).
    present = source_order(dets)
    n_mod = len(FUSED_MODALITIES)
    boxes_l, scores_l, labels_l, src_l, idx_l, rows_l = [], [], [], [], [], []
    for k, m in enumerate(present):
        obs = dets[m]
        n = len(obs.boxes)
        s = np.asarray(obs.scores, dtype=np.float64)
        if calibration is not None and m in calibration:
            s = calibration[m](s).astype(np.float64)
        boxes_l.append(np.asarray(obs.boxes, dtype=np.float64))
        scores_l.append(s)
        labels_l.append(np.asarray(obs.labels).astype(np.int64))
        src_l.append(np.full(n, k, dtype=np.int64))
        idx_l.append(np.arange(n, dtype=np.int64))
        rows_l.append(_attribution_rows(m, obs, n_mod))
    if not present or sum(len(b) for b in boxes_l) == 0:
        return Obstacles.empty(stamp, frame_id)
    boxes = np.concatenate(boxes_l)
    scores = np.concatenate(scores_l)
    labels = np.concatenate(labels_l)
    mods = np.concatenate(src_l)
    index = np.concatenate(idx_l)
    rows = np.concatenate(rows_l)

    # np.lexsort: last key is primary. Box columns make ties independent of input order.
    keys = [index] + [boxes[:, c] for c in range(BOX_DIM - 1, -1, -1)] + [mods, -scores, labels]
    order = np.lexsort(keys)
    radii = cfg.radii()

    # Greedy clustering, one class at a time, in `order`. Running sums per
    # cluster keep its score-weighted centre O(1) to update.
    n = len(order)
    cid = np.empty(n, dtype=np.int64)  # cluster of the box at sorted position p
    c_s = np.zeros(n)
    c_sxy = np.zeros((n, 2))
    c_xy = np.zeros((n, 2))
    c_cnt = np.zeros(n, dtype=np.int64)
    centres = np.zeros((n, 2))
    cluster_label = np.zeros(n, dtype=np.int64)
    n_c = 0
    start = 0
    while start < n:
        label = int(labels[order[start]])
        stop = start
        while stop < n and labels[order[stop]] == label:
            stop += 1
        r2 = radii[label] ** 2
        first = n_c
        for pos in range(start, stop):
            i = order[pos]
            xy = boxes[i, :2]
            j = -1
            if n_c > first:
                hit = np.flatnonzero(np.sum((centres[first:n_c] - xy) ** 2, axis=1) <= r2)
                if len(hit):
                    j = first + int(hit[0])
            if j < 0:
                j = n_c
                n_c += 1
                cluster_label[j] = label
            s = scores[i]
            c_s[j] += s
            c_sxy[j] += s * xy
            c_xy[j] += xy
            c_cnt[j] += 1
            centres[j] = c_sxy[j] / c_s[j] if c_s[j] > 0 else c_xy[j] / c_cnt[j]
            cid[pos] = j
        start = stop

    # Fuse every cluster at once (sums in sorted order, so input order cannot change the rounding).
    sb, ss, sm, sr = boxes[order], scores[order], mods[order], rows[order]
    s_sum = np.bincount(cid, ss, minlength=n_c)
    count = np.bincount(cid, minlength=n_c).astype(np.float64)
    mass = s_sum > 0
    w = np.where(mass[cid], ss / np.where(mass, s_sum, 1.0)[cid], 1.0 / count[cid])
    fused = np.zeros((n_c, BOX_DIM))
    for col in (0, 1, 2, 3, 4, 5, 7, 8):
        fused[:, col] = np.bincount(cid, w * sb[:, col], minlength=n_c)
    yaw = sb[:, 6]
    if cfg.align_flipped_yaw:
        founder = np.full(n_c, n, dtype=np.int64)
        np.minimum.at(founder, cid, np.arange(n))  # first (best-scoring) member of each cluster
        flip = np.abs(wrap_angle(yaw - yaw[founder[cid]])) > np.pi / 2
        yaw = np.where(flip, yaw + np.pi, yaw)
    fused[:, 6] = np.arctan2(np.bincount(cid, w * np.sin(yaw), minlength=n_c),
                             np.bincount(cid, w * np.cos(yaw), minlength=n_c))
    attribution = np.zeros((n_c, n_mod))
    np.add.at(attribution, cid, w[:, None] * sr)
    best = np.full((n_c, len(present)), -1.0)
    np.maximum.at(best, (cid, sm), ss)
    contributed = best >= 0
    n_contrib = contributed.sum(axis=1)
    mean_score = s_sum / count
    noisy_or = 1.0 - np.prod(np.where(contributed, 1.0 - best, 1.0), axis=1)
    cluster_label = cluster_label[:n_c]
    fused[:, 6] = wrap_angle(fused[:, 6])

    if cfg.score_mode == "wbf":
        if expected is None:
            n_expected = np.full(n_c, len(present), dtype=np.int64)
        else:
            xy = fused[:, :2].copy()
            n_expected = np.zeros(n_c, dtype=np.int64)
            for m in present:
                fn = expected.get(m)
                if fn is None:
                    n_expected += 1
                    continue
                mask = np.asarray(fn(xy.copy()))
                if mask.shape != (n_c,):
                    raise ValueError(f"expected[{m!r}] returned shape {mask.shape}, wanted ({n_c},)")
                if mask.dtype != bool:
                    if not _is_real_array(mask) or not np.all(np.isin(mask, (0, 1))):
                        raise ValueError(f"expected[{m!r}] must return a bool mask")
                    mask = mask.astype(bool)
                n_expected += mask.astype(np.int64)
        n_expected = np.maximum(np.maximum(n_expected, n_contrib), 1)
        fused_score = mean_score * np.minimum(n_contrib, n_expected) / n_expected
    else:
        fused_score = noisy_or
    fused_score = np.clip(fused_score, 0.0, 1.0)

    keep = fused_score >= cfg.min_score
    idx = np.flatnonzero(keep)
    out_order = idx[np.lexsort((idx, -fused_score[idx]))]
    return Obstacles(
        stamp,
        frame_id,
        fused[out_order].astype(np.float32),
        fused_score[out_order].astype(np.float32),
        cluster_label[out_order].astype(np.int32),
        attribution[out_order].astype(np.float32),
    )
