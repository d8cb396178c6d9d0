"""Training-free geometric detector: LiDAR boxes from ground removal, BEV clustering and class size priors;
radar boxes from clusters of moving detections.

Why it exists: it needs no model bundle, so it gives the fusion node and the evaluator a detector that works
on any rig from the first minute (a baseline to compare the network with, and a fallback source for late
fusion, docs/DESIGN.md §8), and it fails in ways that are easy to explain. It knows geometry only: a box of
the right size standing on the road is an object, whatever it looks like, and a car-sized hedge is a car.

LiDAR (`detect_lidar`), one numpy/scipy/OpenCV pass, no per-point Python:

1. Ground. Per-cell lowest and highest z on a BEV grid (`ground_cell_m`); a cell lower than all of its
   measured neighbours by `pit_depth_m` is a below-ground return (a multipath echo, a reflection in a
   puddle) and takes their level. The slope envelope — the lowest slope-limited cone under the grid, a grey
   erosion with a conical element — follows any grade up to `ground_max_slope` without lag and steps
   down from kerbs to the road. A ground cell is flat (its returns span `ground_flat_m`), on that envelope
   and, after the sweep's dominant ground plane is taken out (least squares), on a gentler, wider one
   (`ground_typical_slope`, which a far car's lowest ring a ring gap away from the road is not); it keeps its
   own level, so road returns are not lifted into the objects on a constant grade. Every other cell takes the
   lower of its envelope and the level of the nearest ground cell (`scipy.ndimage.distance_transform_edt`
   indices, plane added back): the road next to a car may be a ring gap away.
2. Objects are points `object_min_height_m`..`object_max_height_m` above the local ground, outside the ego
   radius. Their BEV occupancy (`cluster_cell_m`) — from the points below `occupancy_max_height_m`, so a tree
   canopy does not join everything under it, and dilated by a cell beyond `cluster_dilation_range_m`, where
   returns are sparse — is split into 8-connected components (`scipy.ndimage.label`); each point takes its
   cell's component by integer indexing, and points are then sorted by component so that every per-cluster
   statistic is one `reduceat`.
3. Boxes. Per component, its lowest ground is its base and a vertical gap wider than `max_vertical_gap_m`
   cuts off what hangs above it (branches over a parked car); an oriented rectangle of the points' BEV
   positions gives centre, long axis and extents (L >= W): `cv2.minAreaRect` first, then, for vehicle-sized
   clusters seen on two faces, the hull edge direction that best puts the points on the rectangle's edges
   (L-shape fitting, see `_fit_rectangle`); the height is top minus base.
4. Class and score from `ClassPrior`s: hypothesis A reads the long side as the object's length (width
   completed to the typical width when only one face is seen), hypothesis B reads it as the object's width
   (a car seen from behind: length completed to the typical length). Completion grows the box away from the
   sensor, where the hidden faces are, and only when the visible face is at least `min_face_angle_deg` off
   the line of sight. The score multiplies a size match (Gaussian around the typical size inside the hard
   [lo, hi] range; the height may be short by one ring spacing, `ring_spacing_deg`), a penalty per completed
   dimension, a height-profile check (extent of the top third over the length: a car's roof spans most of
   it, a cyclist's torso does not), the class weight and a point support that expects fewer points at long
   range (density falls as 1/r²). `barrier` is never produced: a kerb, a wall and a barrier look alike here.

Known limits: the [lo, hi] gates are hard, so a car measured 2 cm outside them is no car; objects closer than
about one cell merge (a car against a hedge or a pole), and a merged cluster fits no class; a tree trunk of
pedestrian height and width is a pedestrian; a building corner cut by the LiDAR's upper field of view can be
a truck; ground cells on grades well above the plane (a ramp off a flat street) fall back to the envelope.

Radar (`detect_radar`): detections moving faster than `radar_min_speed_mps` (ego-motion compensated radial
velocity) are linked when closer than `radar_link_m` in BEV with radial velocities within
`radar_velocity_gate_mps` (`scipy.spatial.cKDTree` pairs + `scipy.sparse.csgraph.connected_components`);
a component of `radar_min_points` or more is one moving object with a class-typical minimum size. Its
velocity is the radial part only: the mean radial velocity along the line of sight. A radar cannot see the
tangential part, so a crossing car has a velocity of about zero here.

Boxes follow docs/DESIGN.md §4 (`[x y z length width height yaw vx vy]`, base_link, length >= width, yaw in
(-pi/2, pi/2] since a geometric box has no heading); weights are [0, 1, 0] for LiDAR and [0, 0, 1] for radar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..core.types import BOX_DIM, DEFAULT_CLASSES, Obstacles, RejectedInput

Range3 = tuple[float, float, float]


@dataclass(frozen=True)
class ClassPrior:
    """What a class looks like to a LiDAR: its size (lo, typical, hi) per dimension [m] and how it is scored.

    `lo`/`hi` are hard limits on what is observed (or completed); the size score is a Gaussian around
    `typical` with sigma = (hi - lo) / 3, so a size at a limit still scores ~0.3.
    """

    name: str
    length: Range3
    width: Range3
    height: Range3
    #: Fewest points a cluster of this class needs.
    min_points: int
    #: Points at which the support term reaches 0.5 for an object at `density_ref_range_m` (scaled by
    #: (ref / range)² further away, because a LiDAR's returns on an object fall with the square of range).
    half_points: float
    #: Relative weight of the class in the score (how much to trust a size match for it); assumed.
    weight: float
    #: Observed width a hypothesis-A box must have. Zero lets one visible face (an I shape) count, with the
    #: width completed; trucks and buses need a visible corner (L shape), because a single flat face of their
    #: length and height is far more often a wall or a façade.
    min_depth_m: float = 0.0
    #: Allow hypothesis B (the long observed side is the width: the object is seen end-on).
    end_view: bool = True
    #: Accepted range of (BEV extent of the top third of the points along the long axis) / (long side).
    top_ratio: tuple[float, float] = (0.0, 1.0)


# Class size priors. Typical sizes: the per-class box sizes (l, w, h) that mmdetection3d uses as nuScenes
# anchors (e.g. its configs/ssn/*_nus-3d.py: car 4.61 x 1.95 x 1.72, truck 6.74 x 2.46 x 2.73, bus
# 11.19 x 2.94 x 3.47, pedestrian 0.73 x 0.66 x 1.76, bicycle 1.68 x 0.60 x 1.27) and the KITTI anchors of
# VoxelNet (Zhou & Tuzel, CVPR 2018: car 3.9 x 1.6 x 1.56, pedestrian 0.8 x 0.6 x 1.73, cyclist
# 1.76 x 0.6 x 1.73); a car's typical size is taken midway between the two datasets, the cyclist's from KITTI
# (nuScenes' bicycle box includes parked bicycles without a rider). Upper limits of trucks and buses follow
# EU Directive 96/53/EC (width <= 2.55 m plus mirrors, height <= 4 m, rigid truck <= 12 m, bus <= 15 m).
# Every lo/hi otherwise, the weights and the top-ratio ranges are assumed (chosen from these typical sizes
# and body shapes, not fitted to any data): lows allow for a LiDAR's ring spacing cutting the top or bottom
# of a far object, car highs include vans (KITTI's Van is a car here).
DEFAULT_PRIORS: tuple[ClassPrior, ...] = (
    ClassPrior("car", (2.5, 4.25, 5.8), (1.4, 1.8, 2.3), (1.1, 1.6, 2.3), min_points=8, half_points=15.0,
               weight=1.0, top_ratio=(0.4, 1.0)),
    ClassPrior("truck", (5.0, 6.7, 12.5), (1.9, 2.45, 2.7), (2.0, 2.9, 4.0), min_points=12, half_points=25.0,
               weight=0.8, min_depth_m=1.0, top_ratio=(0.4, 1.0)),
    ClassPrior("bus", (8.0, 11.2, 15.0), (2.3, 2.55, 2.7), (2.7, 3.3, 4.0), min_points=15, half_points=30.0,
               weight=0.8, min_depth_m=1.0, top_ratio=(0.4, 1.0)),
    ClassPrior("pedestrian", (0.2, 0.75, 1.2), (0.3, 0.65, 1.0), (1.0, 1.75, 2.1), min_points=5, half_points=6.0,
               weight=0.9, end_view=False),
    ClassPrior("cyclist", (1.2, 1.76, 2.3), (0.3, 0.6, 1.0), (1.1, 1.73, 2.1), min_points=6, half_points=8.0,
               weight=0.7, end_view=False, top_ratio=(0.0, 0.6)),
)


@dataclass(frozen=True)
class GeometricConfig:
    """Every threshold of the geometric detector; the defaults come from the class priors and sensor geometry."""

    # --- area ---
    #: Half side of the square BEV area analysed around base_link [m]: the network's grid (docs/DESIGN.md §4).
    range_m: float = 51.2
    #: Returns closer than this to base_link in BEV [m] are the ego vehicle (roof, mirrors, bonnet).
    ego_radius_m: float = 2.0
    #: Points outside this z band [m] are not from the road scene (a broken driver's garbage, aircraft); a
    #: 15 % grade at 50 m is 7.5 m.
    z_limits_m: tuple[float, float] = (-8.0, 8.0)
    # --- ground ---
    #: Ground grid cell [m]; an integer multiple of `cluster_cell_m`.
    ground_cell_m: float = 0.5
    #: Steepest ground followed [rise/run]: steeper than nearly every road (design maximum grades are ~6-12 %;
    #: assumed), so a constant grade never lifts road returns into the objects, while a car's low returns
    #: seen d metres from the nearest road return lift its ground by at most slope * d.
    ground_max_slope: float = 0.15
    #: Window of the slope envelope [m]: returns further away than half of it do not constrain a cell.
    ground_window_m: float = 3.0
    #: A ground cell also lies on the gentle envelope: this slope over `ground_gentle_window_m`, on cells of
    #: `ground_fill_factor` ground cells, of the heights above the sweep's dominant ground plane (a least-
    #: squares fit to the cells that pass the steep test, so a constant grade is taken out first). It is what
    #: tells a far car's lowest ring, a ring gap away from the road, from the road: that ring stands ~0.2-0.3 m
    #: above the road 3-6 m away, more than the road departs from its plane there (assumed: 3 %).
    ground_typical_slope: float = 0.03
    ground_gentle_window_m: float = 12.0
    #: A ground cell is flat: its returns span at most this height [m] (road noise, a kerb edge) ...
    ground_flat_m: float = 0.2
    #: ... and its lowest return is within this of the slope envelope [m] (not a car roof next to its sides).
    ground_tol_m: float = 0.1
    #: Other cells take the level of the nearest ground cell, searched on cells of `ground_cell_m` times this
    #: (when lower than their envelope): ground rings of a LiDAR are metres apart at range (an HDL-32E's hit
    #: flat ground at ~24 m and ~36 m, nothing in between), so the road next to a far car may be far away.
    ground_fill_factor: int = 4
    #: A cell this much lower than every measured neighbour [m] holds a below-ground echo, not the ground
    #: (a 15 cm kerb or a 5 % grade between 0.5 m cells stays far below it).
    pit_depth_m: float = 0.3
    # --- objects ---
    #: Points higher than this above the local ground are objects [m]: above kerbs (10-15 cm) and road
    #: camber, below a car's sills.
    object_min_height_m: float = 0.25
    #: Points higher than this are dropped [m]: overhead structures and high canopies. It is above the
    #: tallest class (4 m), so a cluster that still reaches it after the vertical-gap cut (a façade, a tree)
    #: is taller than any class and is dropped before its rectangle is fitted.
    object_max_height_m: float = 4.5
    #: Only points below this height build the cluster occupancy [m] (every class has its body there).
    occupancy_max_height_m: float = 2.5
    #: Clustering cell [m]: two objects further apart than about one cell are separate.
    cluster_cell_m: float = 0.25
    #: Dilation of the occupancy before labelling, in cells (0 = none), beyond `cluster_dilation_range_m`.
    #: One cell links returns up to two cells apart: far away, a face seen at a grazing angle has returns
    #: ~0.3-0.5 m apart along it (a 0.2° azimuth step at 30 m is 0.1 m across the ray, several times that along
    #: an oblique face). Nearer, returns are dense and no dilation keeps cars parked ~0.5 m apart, or a car and
    #: a pole, separate.
    cluster_dilation: int = 1
    cluster_dilation_range_m: float = 20.0
    #: Clusters whose axis-aligned BEV diagonal exceeds this [m] are walls, buildings or vegetation.
    max_cluster_extent_m: float = 16.0
    #: A vertical gap wider than this in a cluster's points [m] cuts off what hangs above (branches, signs);
    #: wider than the ring spacing of a 32-beam LiDAR on a car at ~40 m.
    max_vertical_gap_m: float = 1.0
    #: The lowest point of an object is at most this high above its base [m]: things stand on the road.
    max_bottom_m: float = 1.0
    #: Vertical angle between two LiDAR rings [deg]: an object's top may lie up to range * tan(this) above its
    #: highest return, so that much is allowed on its height. 1.33° is the HDL-32E of nuScenes and the
    #: default rig; set the sensor's own (HDL-64E of KITTI: 26.9° over 64 rings, ~0.43°).
    ring_spacing_deg: float = 1.33
    # --- scoring ---
    #: Score factor per completed dimension (one face seen, end-on view).
    partial_penalty: float = 0.6
    #: A box is only completed when its visible face is at least this far from the line of sight [deg].
    min_face_angle_deg: float = 20.0
    #: Score factor when the height profile (top ratio) is outside the class's range.
    profile_penalty: float = 0.5
    #: Range [m] at which `ClassPrior.half_points` applies.
    density_ref_range_m: float = 10.0
    #: Detections scoring below this are dropped.
    min_score: float = 0.05
    priors: tuple[ClassPrior, ...] = DEFAULT_PRIORS
    # --- radar ---
    #: Moving detection: |ego-compensated radial velocity| above this [m/s] (radar velocity noise ~0.1-0.3).
    radar_min_speed_mps: float = 0.7
    #: Detections of one object are at most this far apart in BEV [m] (a car's returns spread over its body).
    radar_link_m: float = 2.5
    #: ... and their radial velocities at most this far apart [m/s].
    radar_velocity_gate_mps: float = 1.5
    radar_min_points: int = 2
    #: Detections at which the radar score reaches 0.5.
    radar_half_points: float = 2.0
    #: Mean RCS below this [dBsm] is a vulnerable road user (pedestrian ~ -8..-5, bicycle + rider ~ -5..0,
    #: car ~ 10 at 77 GHz: typical automotive-radar values; assumed).
    radar_vru_rcs_dbsm: float = 0.0
    #: A vulnerable road user faster than this [m/s] is a cyclist (walking is ~1.4 m/s).
    radar_cyclist_speed_mps: float = 2.5
    #: Radar detections beyond this BEV range [m] are ignored.
    radar_max_range_m: float = 150.0

    def __post_init__(self) -> None:
        k = self.ground_cell_m / self.cluster_cell_m
        if self.cluster_cell_m <= 0 or self.ground_cell_m <= 0 or abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise ValueError(f"ground_cell_m {self.ground_cell_m} must be a positive integer multiple of "
                             f"cluster_cell_m {self.cluster_cell_m}")
        if self.range_m <= 0 or self.ground_fill_factor < 1 or self.cluster_dilation < 0:
            raise ValueError("range_m must be > 0, ground_far_factor >= 1 and cluster_dilation >= 0")
        if not self.object_min_height_m < self.occupancy_max_height_m <= self.object_max_height_m:
            raise ValueError("need object_min_height_m < occupancy_max_height_m <= object_max_height_m")
        for p in self.priors:
            for name, (lo, typ, hi) in (("length", p.length), ("width", p.width), ("height", p.height)):
                if not 0 <= lo <= typ <= hi or hi <= lo:
                    raise ValueError(f"prior {p.name}: {name} must be lo <= typical <= hi, got {(lo, typ, hi)}")


# ------------------------------------------------------------------------------------------------ input checks


def _as_xyz(xyz: object, what: str) -> np.ndarray:
    """(N, 3) float32 points; an empty or non-numeric array is no points, a wrong shape is rejected."""
    a = np.asarray(xyz)
    if a.size == 0:
        return np.zeros((0, 3), np.float32)
    if a.ndim != 2 or a.shape[1] < 3:
        raise RejectedInput("shape", f"expected (N, 3) points, got shape {a.shape}", what)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.ascontiguousarray(a[:, :3], dtype=np.float32)
    except (TypeError, ValueError):
        return np.zeros((0, 3), np.float32)


def _per_point(values: object, n: int, what: str, *, required: bool) -> np.ndarray | None:
    """A per-point vector of length n as float32 (non-numbers become NaN); None stays None when optional."""
    if values is None:
        if required and n:
            raise RejectedInput("shape", f"no values for {n} points", what)
        return None
    a = np.asarray(values)
    if a.size != n or (a.ndim > 1 and max(a.shape) != a.size):
        raise RejectedInput("shape", f"{a.size} values for {n} points (shape {a.shape})", what)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.ascontiguousarray(a.reshape(-1), dtype=np.float32)
    except (TypeError, ValueError):
        return np.full(n, np.nan, np.float32)


def _obstacles(stamp_ns: int, boxes: list[np.ndarray], scores: list[float], labels: list[int],
               weights: tuple[float, float, float]) -> Obstacles:
    if not boxes:
        return Obstacles.empty(stamp_ns)
    n = len(boxes)
    return Obstacles(stamp_ns, "base_link", np.asarray(boxes, np.float32).reshape(n, BOX_DIM),
                     np.asarray(scores, np.float32), np.asarray(labels, np.int32),
                     np.tile(np.asarray(weights, np.float32), (n, 1)))


def _half_pi_yaw(yaw: np.ndarray) -> np.ndarray:
    """Yaw folded into (-pi/2, pi/2]: a geometric box has an axis, not a heading."""
    return np.pi / 2 - np.mod(np.pi / 2 - yaw, np.pi)


def _size_score(x: np.ndarray, dim: Range3) -> np.ndarray:
    lo, typ, hi = dim
    sigma = (hi - lo) / 3.0
    s = np.exp(-0.5 * ((x - typ) / sigma) ** 2)
    return np.where((x >= lo) & (x <= hi), s, 0.0)


# ------------------------------------------------------------------------------------------------ LiDAR


@dataclass
class _Clusters:
    """Per-cluster measurements that classification needs (one row per candidate cluster)."""

    centre: np.ndarray  # (M, 2) rectangle centre
    u: np.ndarray  # (M, 2) unit vector of the long observed side
    length: np.ndarray  # (M,) long observed side L
    width: np.ndarray  # (M,) short observed side W
    base: np.ndarray  # (M,) ground under the cluster (z)
    height: np.ndarray  # (M,) top - base
    points: np.ndarray  # (M,) points kept
    top_ratio: np.ndarray  # (M,) extent of the top third of the points along u / L


def _shift_min(out: np.ndarray, src: np.ndarray, d: int, axis: int, add: float) -> None:
    """out = min(out, src shifted by ±d cells along axis, + add), in place (cells shifted in from outside
    the grid contribute nothing)."""
    a, b = [slice(None)] * 2, [slice(None)] * 2
    for lo_out, lo_src in ((True, False), (False, True)):
        a[axis] = slice(d, None) if lo_out else slice(None, -d)
        b[axis] = slice(d, None) if lo_src else slice(None, -d)
        np.minimum(out[tuple(a)], src[tuple(b)] + np.float32(add), out=out[tuple(a)])


def _slope_envelope(low: np.ndarray, cell_m: float, slope: float, window_m: float) -> np.ndarray:
    """Lowest slope-limited cone under a cell-minimum grid (empty cells +inf): min over cells j within the
    window of low[j] + slope * d(i, j), d the L1 distance. It is the slope-based filter of Vosselman
    ("Slope based filtering of laser altimetry data", IAPRS XXXIII-B3, 2000) as a grey erosion with a conical
    structuring element; the L1 cone makes it two 1-D erosions, done as shifted minima (numpy, a few dozen
    whole-grid operations). Ground of any grade up to `slope` is followed exactly, with no lag; an object's
    low returns cannot lift the ground more than slope * (distance to the nearest road return)."""
    r = max(1, int(round(window_m / cell_m / 2.0)))
    out = low
    for axis in (0, 1):
        src, out = out, out.copy()
        for d in range(1, r + 1):
            _shift_min(out, src, d, axis, slope * cell_m * d)
    return out


def _block_min(a: np.ndarray, f: int) -> np.ndarray:
    """Minimum over f x f blocks of a square grid whose side is a multiple of f."""
    out = a[::f, ::f].copy()
    for i in range(f):
        for j in range(f):
            if i or j:
                np.minimum(out, a[i::f, j::f], out=out)
    return out


def _upsample(a: np.ndarray, f: int) -> np.ndarray:
    n = a.shape[0]
    return np.broadcast_to(a[:, None, :, None], (n, f, n, f)).reshape(n * f, n * f)


@lru_cache(maxsize=8)
def _ground_cells(n_c: int, k: int) -> np.ndarray:
    """Ground-grid cell of every cluster-grid cell (k x k cluster cells per ground cell), plus the extra
    'outside' cell n_c² -> (n_c / k)²."""
    i = np.arange(n_c * n_c, dtype=np.int64)
    n_g = n_c // k
    out = ((i // n_c) // k) * n_g + (i % n_c) // k
    return np.append(out, n_g * n_g).astype(np.int32)


def _ground_plane(low: np.ndarray, cand: np.ndarray, cell_m: float) -> np.ndarray:
    """Least-squares plane z = a x + b y + c through the candidate ground cells (one refit without the
    cells more than 0.3 m off), evaluated on the grid; zero when fewer than 50 cells are candidates."""
    n = low.shape[0]
    i, j = np.nonzero(cand)
    if i.size < 50:
        return np.zeros_like(low)
    if i.size > 4000:  # a few thousand cells fix three coefficients; every cell would only cost time
        i, j = i[:: i.size // 4000 + 1], j[:: i.size // 4000 + 1]
    zc = low[i, j].astype(np.float64)
    a = np.column_stack(((i - n / 2) * cell_m, (j - n / 2) * cell_m, np.ones(i.size)))
    try:  # normal equations: three unknowns, thousands of well-spread cells
        coef = np.linalg.solve(a.T @ a, a.T @ zc)
        inl = np.abs(a @ coef - zc) < 0.3
        if inl.sum() >= 50:
            coef = np.linalg.solve(a[inl].T @ a[inl], a[inl].T @ zc[inl])
    except np.linalg.LinAlgError:  # all cells on one line
        return np.zeros_like(low)
    u = (np.arange(n) - n / 2) * cell_m
    return (coef[0] * u[:, None] + coef[1] * u[None, :] + coef[2]).astype(np.float32)


def _ground(cell: np.ndarray, z: np.ndarray, n_g: int, cfg: GeometricConfig) -> np.ndarray:
    """Local ground height under every point (see the module docstring, step 1); points in the extra cell
    n_g² (outside the area) get NaN."""
    low_ext = np.full(n_g * n_g + 1, np.inf, np.float32)
    high_ext = np.full(n_g * n_g + 1, -np.inf, np.float32)
    with np.errstate(invalid="ignore"):  # NaN z only ever lands in the extra cell
        np.minimum.at(low_ext, cell, z)
        np.maximum.at(high_ext, cell, z)
    low, high = low_ext[:-1].reshape(n_g, n_g), high_ext[:-1].reshape(n_g, n_g)
    nbr = np.full_like(low, np.inf)  # lowest of the 8 neighbours
    row = np.full_like(low, np.inf)
    _shift_min(row, low, 1, 1, 0.0)
    _shift_min(nbr, row, 1, 0, 0.0)
    np.minimum(nbr, row, out=nbr)
    _shift_min(nbr, low, 1, 0, 0.0)
    pit = np.isfinite(nbr) & (low < nbr - np.float32(cfg.pit_depth_m))
    np.copyto(low, nbr, where=pit)
    f = cfg.ground_fill_factor
    env = _slope_envelope(low, cfg.ground_cell_m, cfg.ground_max_slope, cfg.ground_window_m)
    with np.errstate(invalid="ignore"):
        steep_ok = (high - low <= cfg.ground_flat_m) & (low - env <= cfg.ground_tol_m)
    # The gentle test and the fill work on heights above the sweep's dominant ground plane, so a constant
    # grade of any steepness is taken out first.
    plane = _ground_plane(low, steep_ok, cfg.ground_cell_m)
    rel = low - plane
    gentle = _upsample(_slope_envelope(_block_min(rel, f), cfg.ground_cell_m * f, cfg.ground_typical_slope,
                                       cfg.ground_gentle_window_m), f)
    with np.errstate(invalid="ignore"):
        is_ground = steep_ok & (rel - gentle <= cfg.ground_tol_m)
    coarse = _block_min(np.where(is_ground, rel, np.float32(np.inf)), f)
    seen = np.isfinite(coarse)
    if seen.any():
        ix, iy = ndimage.distance_transform_edt(~seen, return_distances=False, return_indices=True)
        ground = np.minimum(env, _upsample(coarse[ix, iy], f) + plane)
    else:
        ground = env
    np.copyto(ground, low, where=is_ground)
    return np.append(ground.reshape(-1), np.float32(np.nan))[cell]


@lru_cache(maxsize=8)
def _far_cells(n_c: int, cell_m: float, range_m: float) -> np.ndarray:
    """Cells of the cluster grid whose centre is further than range_m from base_link."""
    u = (np.arange(n_c) + 0.5 - n_c / 2) * cell_m
    return np.hypot(u[:, None], u[None, :]) > range_m


def _dilate(occ: np.ndarray) -> np.ndarray:
    """One-cell 8-neighbour dilation of a boolean grid as four shifted ORs (cheaper than
    `ndimage.binary_dilation`, which visits every cell with the structuring element)."""
    out = occ.copy()
    out[1:] |= occ[:-1]
    out[:-1] |= occ[1:]
    rows = out.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


#: Most points a cluster's rectangle and height profile are measured on (a dense cluster is subsampled; the
#: rectangle also gets its extreme points).
_RECT_POINTS = 400


#: Most points (besides the hull) `_fit_rectangle` scores the edge directions on.
_FIT_POINTS = 48
#: Rectangles at least this long and wide [m] are refitted by `_fit_rectangle`: vehicles seen on two faces
#: (thinner ones are one face, smaller ones a person or a bicycle, whose axis matters less).
_FIT_MIN_LENGTH = 2.3
_FIT_MIN_WIDTH = 0.4


def _fit_rectangle(hull_in: np.ndarray, xy: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """Oriented BEV rectangle (cx, cy, ux, uy, L, W) of a cluster, u the long side's direction.

    The minimum-area rectangle is ambiguous on the commonest view of a car, an L of two faces: a right
    triangle's hull fits a rectangle along its legs and one along its hypotenuse with the same area, and
    range noise picks. So every hull edge direction (and the minimum-area one) is scored with the closeness
    criterion of Zhang et al., "Efficient L-Shape Fitting for Vehicle Detection Using Laser Scanners" (IEEE
    IV 2017): the sum over points of 1 / max(d, 5 cm), d the distance to the nearest rectangle edge, which is
    largest when the points lie on two edges of the rectangle — the visible faces.
    """
    hull = cv2.convexHull(hull_in)[:, 0, :]
    edges = np.diff(hull, axis=0, append=hull[:1])
    ang = np.arctan2(edges[:, 1], edges[:, 0])  # the minimum-area rectangle lies along one of them too
    c, s = np.cos(ang), np.sin(ang)
    n_ang = len(ang)
    proj = np.concatenate((xy[:: len(xy) // _FIT_POINTS + 1], hull)) @ np.vstack((np.hstack((c, -s)),
                                                                                 np.hstack((s, c))))
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    d = np.minimum(proj - lo, hi - proj)
    k = int(np.argmax((1.0 / np.maximum(np.minimum(d[:, :n_ang], d[:, n_ang:]), 0.05)).sum(axis=0)))
    lo1, hi1, lo2, hi2 = lo[:n_ang], hi[:n_ang], lo[n_ang:], hi[n_ang:]
    m1, m2 = (lo1[k] + hi1[k]) / 2, (lo2[k] + hi2[k]) / 2
    cx, cy = m1 * c[k] - m2 * s[k], m1 * s[k] + m2 * c[k]
    e1, e2 = hi1[k] - lo1[k], hi2[k] - lo2[k]
    if e1 >= e2:
        return float(cx), float(cy), float(c[k]), float(s[k]), float(e1), float(e2)
    return float(cx), float(cy), float(-s[k]), float(c[k]), float(e2), float(e1)


def _measure_clusters(x: np.ndarray, y: np.ndarray, z: np.ndarray, g: np.ndarray, lab: np.ndarray,
                      origin: np.ndarray, cfg: GeometricConfig) -> _Clusters | None:
    """Base, vertical-gap cut, height, rectangle and height profile of every cluster that could be a class
    (step 3). The points come sorted by label, so every per-cluster statistic is one `reduceat`."""
    starts = np.concatenate(([0], np.flatnonzero(lab[1:] != lab[:-1]) + 1))
    counts = np.diff(np.append(starts, len(lab)))
    base = np.minimum.reduceat(g, starts)
    hb = z - np.repeat(base, counts)  # height above the cluster's base
    li = np.repeat(np.arange(len(counts)), counts)  # compact cluster index
    # Vertical gaps: occupancy of height bins per cluster; a run of k empty bins above the lowest occupied
    # one is a gap (~max_vertical_gap_m) and everything above it is dropped.
    k = 4
    bin_m = cfg.max_vertical_gap_m / k
    nb = int(math.ceil((cfg.object_max_height_m + 2.0) / bin_m)) + k
    hbin = np.minimum((hb * np.float32(1.0 / bin_m)).astype(np.int32), nb - 1)
    occupied = np.bincount(li * nb + hbin, minlength=len(counts) * nb).reshape(len(counts), nb) > 0
    runs = np.lib.stride_tricks.sliding_window_view(~occupied, k, axis=1).all(axis=2)
    runs &= np.arange(runs.shape[1])[None, :] > np.argmax(occupied, axis=1)[:, None]
    cut = np.where(runs.any(axis=1), np.argmax(runs, axis=1), nb)
    keep = np.flatnonzero(hbin < cut[li])  # index gathers: much faster than boolean masks on big arrays
    x, y, hb, li = x[keep], y[keep], hb[keep], li[keep]
    starts = np.concatenate(([0], np.flatnonzero(li[1:] != li[:-1]) + 1))  # each cluster keeps its lowest
    counts = np.diff(np.append(starts, len(li)))
    top = np.maximum.reduceat(hb, starts)
    bottom = np.minimum.reduceat(hb, starts)
    lo_x, hi_x = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
    lo_y, hi_y = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    rng = np.hypot((lo_x + hi_x) / 2 - origin[0], (lo_y + hi_y) / 2 - origin[1])
    slack = rng * math.tan(math.radians(cfg.ring_spacing_deg))
    min_pts = min(p.min_points for p in cfg.priors)
    min_h = min(p.height[0] for p in cfg.priors)
    max_h = max(p.height[2] for p in cfg.priors)
    # An oriented rectangle's long side is at most the box's diagonal: posts and fragments shorter than every
    # class's shortest side are dropped here, before any per-cluster work.
    diag = np.hypot(hi_x - lo_x, hi_y - lo_y)
    min_l = min(min(p.length[0], p.width[0]) for p in cfg.priors)
    cand = np.flatnonzero((counts >= min_pts) & (bottom <= cfg.max_bottom_m) & (top + slack >= min_h)
                          & (top <= max_h) & (diag <= cfg.max_cluster_extent_m) & (diag >= min_l))
    if cand.size == 0:
        return None
    # (L lo, L hi, W lo, W hi) an observed rectangle must fit for some hypothesis of some class: the top
    # ratio is only worth measuring then.
    shapes = [(p.length[0], p.length[2], p.min_depth_m, p.width[2]) for p in cfg.priors]
    shapes += [(p.width[0], p.width[2], 0.0, p.length[0]) for p in cfg.priors if p.end_view]
    rows = np.empty((len(cand), 7))
    xy_all = np.column_stack((x, y))
    first, size, tops = starts.tolist(), counts.tolist(), top.tolist()  # Python scalars: a faster loop
    for row, j in enumerate(cand.tolist()):
        b, n = first[j], size[j]
        step = n // _RECT_POINTS + 1  # a dense cluster is subsampled, keeping its extreme points
        sl = slice(b, b + n, step)
        xy = xy_all[sl]
        hull_in = xy
        if step > 1:
            full = xy_all[b:b + n]
            ext = [full[:, 0].argmin(), full[:, 0].argmax(), full[:, 1].argmin(), full[:, 1].argmax()]
            hull_in = np.concatenate((xy, full[ext]))
        (cx, cy), (w, h), angle = cv2.minAreaRect(hull_in)
        long_side, short_side = max(w, h), min(w, h)
        ratio = 1.0
        plausible = long_side > 1e-6 and any(a_lo <= long_side <= a_hi and b_lo <= short_side <= b_hi
                                             for a_lo, a_hi, b_lo, b_hi in shapes)
        if plausible and long_side >= _FIT_MIN_LENGTH and short_side >= _FIT_MIN_WIDTH:
            # two faces seen (an L): the minimum-area rectangle may lie along the diagonal
            cx, cy, ux, uy, long_side, short_side = _fit_rectangle(hull_in, xy)
        else:
            t = math.radians(angle)  # RotatedRect: side `w` runs along (cos angle, sin angle)
            ux, uy = (math.cos(t), math.sin(t)) if w >= h else (-math.sin(t), math.cos(t))
        if plausible:
            upper = xy[hb[sl] >= tops[j] * (2.0 / 3.0)]
            if len(upper):
                along = upper[:, 0] * ux + upper[:, 1] * uy
                ratio = float(along.max() - along.min()) / max(long_side, 1e-6)
        rows[row] = (cx, cy, ux, uy, long_side, short_side, ratio)
    return _Clusters(centre=rows[:, 0:2], u=rows[:, 2:4], length=rows[:, 4], width=rows[:, 5],
                     base=base[cand].astype(np.float64), height=top[cand].astype(np.float64),
                     points=counts[cand].astype(np.float64), top_ratio=rows[:, 6])


def _classify(c: _Clusters, origin: np.ndarray, cfg: GeometricConfig
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (prior index, score, box) per cluster over hypotheses A and B of every prior (step 4)."""
    m = len(c.length)
    L, W, H, n = c.length, c.width, c.height, c.points
    v = np.column_stack((-c.u[:, 1], c.u[:, 0]))
    rng = np.maximum(np.hypot(*(c.centre - origin).T), 1e-3)
    slack = rng * math.tan(math.radians(cfg.ring_spacing_deg))
    away = np.where(np.einsum("ij,ij->i", c.centre - origin, v) >= 0.0, 1.0, -1.0)
    # Completion needs a visible face that faces the sensor: along a face seen at a grazing angle, which
    # side hides the rest is unknowable, and a wall piece along the line of sight looks like a car's end.
    facing = np.abs(np.einsum("ij,ij->i", c.centre - origin, c.u)) / rng <= math.cos(
        math.radians(cfg.min_face_angle_deg))
    density = (cfg.density_ref_range_m / np.maximum(rng, cfg.density_ref_range_m)) ** 2
    best_score = np.zeros(m)
    best_prior = np.full(m, -1)
    best_len, best_wid, best_grow, best_h = np.zeros(m), np.zeros(m), np.zeros(m), H.copy()
    best_along_v = np.zeros(m, bool)  # length axis is v (end-on view), else u
    for k, p in enumerate(cfg.priors):
        support = n / (n + p.half_points * density)
        # The top may lie between two rings: the true height is in [H, H + slack]; take the likeliest.
        height = np.clip(p.height[1], H, H + slack)
        lo_r, hi_r = p.top_ratio
        profile = np.where((c.top_ratio >= lo_r) & (c.top_ratio <= hi_r), 1.0, cfg.profile_penalty)
        common = p.weight * support * _size_score(height, p.height) * profile * (n >= p.min_points)
        # A: the long side is the length; one face seen -> width completed.
        full_w = W >= p.width[0]
        ok_a = (W <= p.width[2]) & (W >= p.min_depth_m) & (full_w | facing)
        score_a = common * ok_a * _size_score(L, p.length) * np.where(full_w, _size_score(W, p.width),
                                                                      cfg.partial_penalty)
        wid_a = np.where(full_w, W, p.width[1])
        cand = [(score_a, L, wid_a, wid_a - W, False)]
        if p.end_view:
            # B: the long side is the width (seen end-on) -> length completed along v.
            ok_b = (W < p.length[0]) & facing
            score_b = common * ok_b * _size_score(L, p.width) * cfg.partial_penalty
            len_b = np.full(m, p.length[1])
            cand.append((score_b, len_b, L, len_b - W, True))
        for score, length, width, grow, along_v in cand:
            better = score > best_score
            best_score = np.where(better, score, best_score)
            best_prior = np.where(better, k, best_prior)
            best_len = np.where(better, length, best_len)
            best_wid = np.where(better, width, best_wid)
            best_grow = np.where(better, np.maximum(grow, 0.0), best_grow)
            best_h = np.where(better, height, best_h)
            best_along_v = np.where(better, along_v, best_along_v)
    centre = c.centre + v * (away * best_grow / 2.0)[:, None]
    axis = np.where(best_along_v[:, None], v, c.u)
    yaw = np.arctan2(axis[:, 1], axis[:, 0])
    swap = best_wid > best_len  # keep length >= width (a small pedestrian footprint)
    length = np.where(swap, best_wid, best_len)
    width = np.where(swap, best_len, best_wid)
    yaw = _half_pi_yaw(np.where(swap, yaw + np.pi / 2, yaw))
    boxes = np.zeros((m, BOX_DIM))
    boxes[:, 0:2] = centre
    boxes[:, 2] = c.base + best_h / 2.0
    boxes[:, 3], boxes[:, 4], boxes[:, 5], boxes[:, 6] = length, width, best_h, yaw
    return best_prior, np.clip(best_score, 0.0, 1.0), boxes


def detect_lidar(xyz: np.ndarray, intensity: np.ndarray | None, stamp_ns: int,
                 config: GeometricConfig = GeometricConfig(), classes: Sequence[str] = DEFAULT_CLASSES, *,
                 origin: Sequence[float] = (0.0, 0.0)) -> Obstacles:
    """3D boxes of the objects in one LiDAR sweep already in base_link (ground near z = 0).

    `intensity` is only checked for length: reflectance scales differ between LiDARs (rig `intensity_max`)
    and the geometric rules do not need it. `origin` is the sensor's BEV position in base_link; hidden faces
    are on the far side from it, so completed boxes grow that way. Priors whose class is not in `classes`
    give no boxes. Non-finite points are dropped; an empty sweep gives no boxes; `RejectedInput` only for
    arrays of the wrong shape.
    """
    stamp = int(stamp_ns)
    cfg = config
    pts = _as_xyz(xyz, "lidar xyz")
    _per_point(intensity, len(pts), "lidar intensity", required=False)
    if len(pts) == 0:
        return Obstacles.empty(stamp)
    cell_c = cfg.cluster_cell_m
    k_g = int(round(cfg.ground_cell_m / cell_c))
    block = k_g * cfg.ground_fill_factor
    n_c = int(math.ceil(2.0 * cfg.range_m / cell_c / block)) * block  # cluster cells per side
    half = n_c * cell_c / 2.0
    x, y, z = np.ascontiguousarray(pts.T)
    with np.errstate(invalid="ignore"):  # NaN compares False: non-finite points drop out here
        keep = np.abs(x) < np.float32(cfg.range_m)
        keep &= np.abs(y) < np.float32(cfg.range_m)
        keep &= z > np.float32(cfg.z_limits_m[0])
        keep &= z < np.float32(cfg.z_limits_m[1])
        keep &= x * x + y * y >= np.float32(cfg.ego_radius_m ** 2)
        inv = np.float32(1.0 / cell_c)
        cx = ((x + np.float32(half)) * inv).astype(np.int32)
        cy = ((y + np.float32(half)) * inv).astype(np.int32)
    # Points outside the area go to the extra cell n_c² instead of being gathered out (index gathers of
    # every coordinate would cost more than carrying them).
    cell = np.where(keep, np.minimum(cx, n_c - 1) * n_c + np.minimum(cy, n_c - 1), n_c * n_c)
    g = _ground(_ground_cells(n_c, k_g)[cell], z, n_c // k_g, cfg)
    with np.errstate(invalid="ignore"):
        h = z - g
        obj = np.flatnonzero((h > cfg.object_min_height_m) & (h < cfg.object_max_height_m))
    if obj.size == 0:
        return Obstacles.empty(stamp)
    ocell = cell[obj]
    low = h[obj] < cfg.occupancy_max_height_m
    occ = np.zeros(n_c * n_c, bool)
    occ[ocell[np.flatnonzero(low)]] = True
    occ = occ.reshape(n_c, n_c)
    if cfg.cluster_dilation:
        far = _far_cells(n_c, cell_c, cfg.cluster_dilation_range_m)
        grown = occ
        for _ in range(cfg.cluster_dilation):
            grown = _dilate(grown)
        occ = occ | (grown & far)
    grid, n_lab = ndimage.label(occ, structure=np.ones((3, 3), bool))
    lab = grid.reshape(-1)[ocell]
    order = np.argsort(lab.astype(np.uint16) if n_lab < 65536 else lab, kind="stable")  # uint16: radix sort
    order = order[np.count_nonzero(lab == 0):]  # label 0: high points over no low ones (a canopy)
    if order.size == 0:
        return Obstacles.empty(stamp)
    obj, lab = obj[order], lab[order]
    o = np.asarray(origin, np.float64)[:2]
    clusters = _measure_clusters(x[obj], y[obj], z[obj], g[obj], lab, o, cfg)
    if clusters is None:
        return Obstacles.empty(stamp)
    prior, score, boxes = _classify(clusters, o, cfg)
    index = {name: i for i, name in enumerate(classes)}
    out_boxes, out_scores, out_labels = [], [], []
    for j in np.flatnonzero((prior >= 0) & (score >= cfg.min_score)):
        name = cfg.priors[prior[j]].name
        if name in index:
            out_boxes.append(boxes[j])
            out_scores.append(float(score[j]))
            out_labels.append(index[name])
    return _obstacles(stamp, out_boxes, out_scores, out_labels, (0.0, 1.0, 0.0))


# ------------------------------------------------------------------------------------------------ radar


def detect_radar(xyz: np.ndarray, v_comp: np.ndarray, rcs: np.ndarray | None, stamp_ns: int,
                 config: GeometricConfig = GeometricConfig(), classes: Sequence[str] = DEFAULT_CLASSES, *,
                 origin: Sequence[float] = (0.0, 0.0)) -> Obstacles:
    """Boxes of the moving objects in one radar scan (base_link xyz, ego-compensated radial velocity [m/s]).

    `origin` is the radar's BEV position in base_link: the line of sight runs from it, so it gives the
    direction of the (radial-only) velocity and the side the box grows to. `rcs` [dBsm] is optional; without
    it every object is a car. Boxes stand on z = 0 (radar elevation is too coarse to place them). Non-finite
    detections are dropped; `RejectedInput` only for arrays of the wrong shape.
    """
    stamp = int(stamp_ns)
    cfg = config
    pts = _as_xyz(xyz, "radar xyz")
    n = len(pts)
    v = _per_point(v_comp, n, "radar v_comp", required=True)
    r = _per_point(rcs, n, "radar rcs", required=False)
    if n == 0 or v is None:
        return Obstacles.empty(stamp)
    o = np.asarray(origin, np.float64)[:2]
    with np.errstate(invalid="ignore"):
        rel = pts[:, :2].astype(np.float64) - o
        good = (np.isfinite(pts).all(axis=1) & np.isfinite(v) & (np.abs(v) > cfg.radar_min_speed_mps)
                & (np.hypot(rel[:, 0], rel[:, 1]) < cfg.radar_max_range_m))
    idx = np.flatnonzero(good)
    if idx.size < cfg.radar_min_points:
        return Obstacles.empty(stamp)
    p, vel = rel[idx], v[idx].astype(np.float64)
    pairs = cKDTree(p).query_pairs(cfg.radar_link_m, output_type="ndarray")
    if len(pairs):
        pairs = pairs[np.abs(vel[pairs[:, 0]] - vel[pairs[:, 1]]) <= cfg.radar_velocity_gate_mps]
    m = len(p)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    n_comp, comp = connected_components(graph, directed=False)
    counts = np.bincount(comp, minlength=n_comp).astype(np.float64)
    centroid = np.column_stack((np.bincount(comp, p[:, 0], n_comp), np.bincount(comp, p[:, 1], n_comp)))
    centroid /= counts[:, None]
    v_mean = np.bincount(comp, vel, n_comp) / counts
    if r is not None:
        rc = r[idx].astype(np.float64)
        fin = np.isfinite(rc)
        n_rcs = np.bincount(comp, fin.astype(np.float64), n_comp)
        with np.errstate(invalid="ignore", divide="ignore"):
            rcs_mean = np.bincount(comp, np.where(fin, rc, 0.0), n_comp) / n_rcs
    else:
        rcs_mean = np.full(n_comp, np.nan)
    los = centroid / np.maximum(np.hypot(centroid[:, 0], centroid[:, 1]), 1e-6)[:, None]
    perp = np.column_stack((-los[:, 1], los[:, 0]))
    along = np.einsum("ij,ij->i", p, los[comp])
    across = np.einsum("ij,ij->i", p, perp[comp])
    a_lo, a_hi = np.full(n_comp, np.inf), np.full(n_comp, -np.inf)
    c_lo, c_hi = a_lo.copy(), a_hi.copy()
    np.minimum.at(a_lo, comp, along)
    np.maximum.at(a_hi, comp, along)
    np.minimum.at(c_lo, comp, across)
    np.maximum.at(c_hi, comp, across)
    priors = {q.name: q for q in cfg.priors}
    index = {name: i for i, name in enumerate(classes)}
    boxes, scores, labels = [], [], []
    for j in np.flatnonzero(counts >= cfg.radar_min_points):
        name = "car"
        if np.isfinite(rcs_mean[j]) and rcs_mean[j] < cfg.radar_vru_rcs_dbsm:
            name = "cyclist" if abs(v_mean[j]) > cfg.radar_cyclist_speed_mps else "pedestrian"
        if name not in index or name not in priors:
            continue
        q = priors[name]
        ext_a, ext_c = a_hi[j] - a_lo[j], c_hi[j] - c_lo[j]
        length, width = max(ext_a, q.length[1]), max(ext_c, q.width[1])
        # Returns lie on the near surface: the rest of the box is behind them along the line of sight.
        mid_a = a_lo[j] + length / 2.0
        mid_c = (c_lo[j] + c_hi[j]) / 2.0
        centre = o + los[j] * mid_a + perp[j] * mid_c
        yaw = math.atan2(los[j, 1], los[j, 0])
        if width > length:
            length, width, yaw = width, length, yaw + math.pi / 2
        box = np.array([centre[0], centre[1], q.height[1] / 2.0, length, width, q.height[1],
                        float(_half_pi_yaw(np.float64(yaw))), v_mean[j] * los[j, 0], v_mean[j] * los[j, 1]])
        boxes.append(box)
        scores.append(float(counts[j] / (counts[j] + cfg.radar_half_points)))
        labels.append(index[name])
    return _obstacles(stamp, boxes, scores, labels, (0.0, 0.0, 1.0))
