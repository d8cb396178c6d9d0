"""The BEV grid (docs/DESIGN.md §4) and the numpy rasters the network reads (docs/DESIGN.md §7).

One `BevGrid` owns cell ↔ metre conversion, so every consumer (LiDAR and
radar rasters, coverage masks, the camera lift, target encoding, decoding)
agrees on where a cell is. Conventions (`network_io`): an array ``[..., i, j]``
has row ``i`` along x (forward) and column ``j`` along y (left); cell ``(i, j)``
spans ``x ∈ [x0 + i·cell, x0 + (i+1)·cell)``. Input rasters use the fine grid
(GRID², 0.8 m); feature maps, coverage and head outputs the coarse one
(FEAT², stride 2, 1.6 m).

Rasters are built with one `np.bincount` per statistic and one radix argsort
(int16 cell ids) + `reduceat` for the min/max: `np.maximum.at` costs ~10× more on a 100k-point
sweep, and the whole LiDAR raster has a 5 ms budget (benchmarks/bench_preprocess.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import network_io as nio
from .rig import SensorSpec
from .types import Modality, PointCloud, RejectedInput

#: Heights (base_link z, m) bounding each LiDAR height slice channel (`network_io.LIDAR_SWEEP_CHANNELS`).
LIDAR_SLICES: tuple[tuple[float, float], ...] = ((0.2, 1.0), (1.0, 2.0), (2.0, 4.0))
#: Normalisation constants of the rasters (documented in `network_io`).
OCCUPANCY_NORM = float(np.log1p(64.0))
RCS_OFFSET_DB, RCS_SPAN_DB = 20.0, 60.0
DOPPLER_NORM_MPS = 30.0
_SLICE_EDGES = tuple(np.float32(e) for e in [LIDAR_SLICES[0][0]] + [hi for _, hi in LIDAR_SLICES])
_N_SLOTS = len(_SLICE_EDGES) + 1


@dataclass(frozen=True)
class BevGrid:
    """A square-celled BEV grid over ``x_range × y_range`` in base_link at time T."""

    x_range: tuple[float, float] = nio.X_RANGE
    y_range: tuple[float, float] = nio.Y_RANGE
    cell_m: float = nio.CELL_M
    stride: int = nio.GRID // nio.FEAT

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("x_range", self.x_range), ("y_range", self.y_range)):
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(f"BevGrid.{name} must be a finite (low, high) with high > low, got {(lo, hi)}")
            n = (hi - lo) / self.cell_m
            if abs(n - round(n)) > 1e-6:
                raise ValueError(f"BevGrid.{name} span {hi - lo} m is not a whole number of {self.cell_m} m cells")
        if self.stride < 1 or self.nx % self.stride or self.ny % self.stride:
            raise ValueError(f"BevGrid.stride {self.stride} must divide the grid size {self.nx}x{self.ny}")

    # ------------------------------------------------------------------ geometry
    @property
    def nx(self) -> int:
        return int(round((self.x_range[1] - self.x_range[0]) / self.cell_m))

    @property
    def ny(self) -> int:
        return int(round((self.y_range[1] - self.y_range[0]) / self.cell_m))

    @property
    def feat_nx(self) -> int:
        return self.nx // self.stride

    @property
    def feat_ny(self) -> int:
        return self.ny // self.stride

    @property
    def feat_cell_m(self) -> float:
        return self.cell_m * self.stride

    def shape(self, stride: int = 1) -> tuple[int, int]:
        return self.nx // stride, self.ny // stride

    def to_cells(self, x, y, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Continuous cell coordinates (cell (i, j) spans [i, i+1) × [j, j+1)) at `stride`."""
        c = self.cell_m * stride
        return (np.asarray(x, np.float64) - self.x_range[0]) / c, (np.asarray(y, np.float64) - self.y_range[0]) / c

    def cell_index(self, x, y, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Integer cell (i, j) containing each point; meaningful only where `in_grid`."""
        u, v = self.to_cells(x, y, stride)
        return np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)

    def in_grid(self, x, y) -> np.ndarray:
        """True for points inside [x0, x1) × [y0, y1) (NaN is outside)."""
        x = np.asarray(x)
        y = np.asarray(y)
        return (x >= self.x_range[0]) & (x < self.x_range[1]) & (y >= self.y_range[0]) & (y < self.y_range[1])

    def cell_centres(self, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of every cell centre at `stride`, each shaped (nx/stride, ny/stride)."""
        c = self.cell_m * stride
        nx, ny = self.shape(stride)
        xs = self.x_range[0] + (np.arange(nx) + 0.5) * c
        ys = self.y_range[0] + (np.arange(ny) + 0.5) * c
        return np.meshgrid(xs, ys, indexing="ij")

    def cell_to_xy(self, i, j, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Metres of continuous cell coordinates (inverse of `to_cells`)."""
        c = self.cell_m * stride
        return self.x_range[0] + np.asarray(i, np.float64) * c, self.y_range[0] + np.asarray(j, np.float64) * c

    # ------------------------------------------------------------------ rasters
    def _flat_cells(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = ((x - self.x_range[0]) * (1.0 / self.cell_m)).astype(np.int32)
        v = ((y - self.y_range[0]) * (1.0 / self.cell_m)).astype(np.int32)
        # float rounding at the far edge can give nx; those points were in-grid by < 1 ulp
        np.minimum(u, self.nx - 1, out=u)
        np.minimum(v, self.ny - 1, out=v)
        return u * self.ny + v

    def _cells_and_z(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat cell index (intp), float32 z and row index of the points inside the grid and the z window.

        Cell coordinates are floored to int32 and range-checked as uint32 (negatives wrap to huge
        values), one comparison per axis; NaN/inf cast to INT_MIN and fall out the same way.
        """
        x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        dt = np.float32 if xyz.dtype == np.float32 else np.float64
        with np.errstate(invalid="ignore", over="ignore"):
            u = np.floor((x - dt(self.x_range[0])) * dt(1.0 / self.cell_m)).astype(np.int32)
            v = np.floor((y - dt(self.y_range[0])) * dt(1.0 / self.cell_m)).astype(np.int32)
        keep = u.view(np.uint32) < self.nx
        keep &= v.view(np.uint32) < self.ny
        keep &= z >= nio.Z_MIN
        keep &= z < nio.Z_MAX  # NaN compares False
        u *= self.ny  # flat cell index, still int32 (cheap), only meaningful where keep
        u += v
        if keep.all():  # the usual case for a cropped driver cloud: no gathers
            return u.astype(np.intp), z.astype(np.float32), np.arange(len(u))
        idx = np.flatnonzero(keep)
        return u[idx].astype(np.intp), z[idx].astype(np.float32), idx

    def lidar_raster(self, xyz: np.ndarray, intensity: np.ndarray | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
        """Pillar statistics of one sweep per `network_io.LIDAR_SWEEP_CHANNELS`: (8, nx, ny) float32.

        `xyz` (N, 3) in base_link at T (deskewed); points outside the grid, outside
        z ∈ [Z_MIN, Z_MAX) or non-finite are not counted. `intensity` is already on the
        network's 0–1 scale (`normalised_intensity`, per sensor) and is clipped to [0, 1].
        `out`: a zeroed C-contiguous (8, nx, ny) float32 array to fill (one sweep's slice of the
        network's multi-sweep input) instead of a new one.
        """
        xyz = _as_points(xyz, "lidar xyz")
        n_cells = self.nx * self.ny
        nch = len(nio.LIDAR_SWEEP_CHANNELS)
        if out is None:
            out = np.zeros((nch, self.nx, self.ny), np.float32)
        elif out.shape != (nch, self.nx, self.ny) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"lidar_raster out must be a C-contiguous {(nch, self.nx, self.ny)} float32 array")
        if intensity is not None and len(np.asarray(intensity).reshape(-1)) != len(xyz):
            raise RejectedInput("shape", f"{np.asarray(intensity).size} intensities for {len(xyz)} points",
                                "lidar intensity")
        if len(xyz) == 0:
            return out
        cell, z, idx = self._cells_and_z(xyz)
        if cell.size == 0:
            return out
        count = np.bincount(cell, minlength=n_cells)
        occ = count > 0
        inv = np.zeros(n_cells, np.float32)
        inv[occ] = 1.0 / count[occ]
        zn = (z - np.float32(nio.Z_MIN)) * np.float32(1.0 / (nio.Z_MAX - nio.Z_MIN))  # in [0, 1)
        flat = out.reshape(nch, n_cells)
        flat[0] = np.log1p(count.astype(np.float32)) / np.float32(OCCUPANCY_NORM)
        # min and max: a stable radix argsort of int16 cell ids groups each cell's points (occupied
        # cells come out ascending, each run starting where the cumulative counts say), then one
        # reduceat per statistic; ~2x cheaper than sorting int64 (cell, z) keys, ~10x than maximum.at
        cells = np.flatnonzero(occ)
        order = np.argsort(cell.astype(np.int16 if n_cells <= 32767 else np.int32), kind="stable")
        zs = zn[order]
        starts = (np.cumsum(count) - count)[cells]
        flat[1, cells] = np.maximum.reduceat(zs, starts)
        flat[2, cells] = np.minimum.reduceat(zs, starts)
        flat[3] = np.bincount(cell, weights=zn, minlength=n_cells) * inv
        if intensity is not None:
            it = np.asarray(intensity, np.float32).reshape(-1)[idx]
            np.fmax(it, 0.0, out=it)  # fmax/fmin drop NaN (→ 0), unlike clip
            np.fmin(it, 1.0, out=it)
            flat[4] = np.bincount(cell, weights=it, minlength=n_cells) * inv
        # height slices: one bincount over (cell, slot) pairs; slot 0 / last = below / above every slice
        sl = cell * _N_SLOTS
        for edge in _SLICE_EDGES:
            sl += z >= edge
        hist = np.bincount(sl, minlength=n_cells * _N_SLOTS).reshape(n_cells, _N_SLOTS)
        flat[5:8] = (hist[:, 1:1 + len(LIDAR_SLICES)] * inv[:, None]).T
        return out

    def radar_raster(self, xyz: np.ndarray, rcs: np.ndarray, v_comp: np.ndarray) -> np.ndarray:
        """Radar statistics per `network_io.RADAR_CHANNELS`: (5, nx, ny) float32.

        `xyz` (N, 3) in base_link at T, `rcs` in dBsm, `v_comp` the ego-compensated
        radial velocity (m/s, over ground; negative = approaching). Radar has no
        useful elevation, so only x, y place a point. Non-finite rows are dropped.
        """
        xyz = _as_points(xyz, "radar xyz")
        rcs = np.asarray(rcs, np.float64).reshape(-1)
        v = np.asarray(v_comp, np.float64).reshape(-1)
        if len(rcs) != len(xyz) or len(v) != len(xyz):
            raise RejectedInput("shape", f"{len(xyz)} points but {len(rcs)} rcs and {len(v)} v_comp", "radar")
        n_cells = self.nx * self.ny
        out = np.zeros((len(nio.RADAR_CHANNELS), self.nx, self.ny), np.float32)
        keep = self.in_grid(xyz[:, 0], xyz[:, 1]) & np.isfinite(rcs) & np.isfinite(v)
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return out
        cell = self._flat_cells(xyz[idx, 0], xyz[idx, 1])
        r = np.clip((rcs[idx] + RCS_OFFSET_DB) / RCS_SPAN_DB, 0.0, 1.0)
        vn = np.clip(v[idx] / DOPPLER_NORM_MPS, -1.0, 1.0)
        count = np.bincount(cell, minlength=n_cells).astype(np.float64)
        occ = count > 0
        inv = np.zeros(n_cells)
        inv[occ] = 1.0 / count[occ]
        flat = out.reshape(len(nio.RADAR_CHANNELS), n_cells)
        flat[0] = np.log1p(count)
        flat[1] = _cell_max(cell, r, n_cells)
        flat[2] = np.bincount(cell, weights=r, minlength=n_cells) * inv
        flat[3] = np.bincount(cell, weights=vn, minlength=n_cells) * inv
        flat[4] = _cell_max(cell, np.abs(vn), n_cells)
        return out

    # ------------------------------------------------------------------ coverage (FEAT resolution)
    def sector_coverage(self, extrinsic: np.ndarray, half_fov: float, max_range: float,
                        min_range: float = 0.0) -> np.ndarray:
        """(feat_nx, feat_ny) float32: 1 where a cell centre is within a sensor's horizontal sector.

        The sector is centred on the sensor's x axis projected to the ground plane
        (`extrinsic` maps sensor → base_link), ±`half_fov` rad, `min_range`…`max_range` m.
        """
        T = np.asarray(extrinsic, np.float64)
        cx, cy = self.cell_centres(self.stride)
        dx, dy = cx - T[0, 3], cy - T[1, 3]
        r = np.hypot(dx, dy)
        heading = np.arctan2(T[1, 0], T[0, 0])
        az = np.angle(np.exp(1j * (np.arctan2(dy, dx) - heading)))
        return ((r >= min_range) & (r <= max_range) & (np.abs(az) <= half_fov)).astype(np.float32)

    def sensor_coverage(self, spec: SensorSpec) -> np.ndarray:
        """Field of view in BEV of one LiDAR or radar of the rig, from its `model` block.

        LiDAR: 360° from `min_range_m` to `max_range_m`. Radar: ±fov_deg/2 to
        `near_range_m` (default `max_range_m`) plus an optional narrow far beam
        ±far_fov_deg/2 to `max_range_m` (ARS 408-style: near ±60° to 70 m, far ±9°).
        """
        m = spec.model
        if spec.modality == Modality.LIDAR:
            return self.sector_coverage(spec.extrinsic, np.pi, float(m.get("max_range_m", 100.0)),
                                        float(m.get("min_range_m", 0.0)))
        if spec.modality == Modality.RADAR:
            max_r = float(m.get("max_range_m", 120.0))
            near = self.sector_coverage(spec.extrinsic, np.deg2rad(float(m.get("fov_deg", 120.0))) / 2,
                                        float(m.get("near_range_m", max_r)))
            if "far_fov_deg" in m:
                far = self.sector_coverage(spec.extrinsic, np.deg2rad(float(m["far_fov_deg"])) / 2, max_r)
                near = np.maximum(near, far)
            return near
        raise ValueError(f"sensor {spec.name}: no BEV coverage model for modality {spec.modality.value}")

    def modality_coverage(self, specs: list[SensorSpec]) -> np.ndarray:
        """Union of `sensor_coverage` over several sensors of one modality (zeros if none)."""
        return self.coverage_union(self.sensor_coverage(s) for s in specs)

    def coverage_union(self, masks: Iterable[np.ndarray]) -> np.ndarray:
        """Cell-wise maximum of feature-resolution coverage masks (zeros if none)."""
        out = np.zeros(self.shape(self.stride), np.float32)
        for m in masks:
            np.maximum(out, m, out=out)
        return out


_ALLOCATOR_TUNED: list[bool] = []


def normalised_intensity(cloud: PointCloud, intensity_max: float) -> np.ndarray:
    """Per-point intensity on the network's 0–1 scale: the driver's value / the sensor's full scale.

    Why per sensor: drivers disagree (8-bit 0–255 for Velodyne packets, nuScenes and View-of-Delft,
    0–1 reflectance for KITTI, 16-bit for some Ouster modes), and a 0–1 sensor read as 0–255 shows
    the network a LiDAR whose every return is black. The rig's `intensity_max` says which; a cloud
    without an intensity field reads as 0. Not clipped here: `BevGrid.lidar_raster` clips (NaN → 0).
    """
    if not cloud.has("intensity"):
        return np.zeros(len(cloud.points), np.float32)
    return np.asarray(cloud.points["intensity"], np.float32) * np.float32(1.0 / float(intensity_max))


#: Finite intensities a sweep needs before its scale is judged (a few returns say nothing about a driver).
INTENSITY_CHECK_MIN_POINTS = 1000
#: Fraction of intensities above 1.05 × intensity_max that says the driver uses a larger scale.
INTENSITY_OVER_FRACTION = 0.01


def intensity_scale_mismatch(cloud: PointCloud, intensity_max: float) -> str | None:
    """Why this sweep's intensities contradict the rig's `intensity_max`, or None when they do not.

    Two contradictions are unmistakable on a real sweep of thousands of returns: values well above
    full scale (a 16-bit or 0–255 driver on a rig that says 0–1: clipped, the network sees white),
    and a rig that says 8-bit while every value is ≤ 1 (a KITTI-style 0–1 driver: the network
    sees black). Sweeps too small or without an intensity field are not judged.
    """
    if not cloud.has("intensity"):
        return None
    v = np.asarray(cloud.points["intensity"], np.float32)
    v = v[np.isfinite(v)]
    if v.size < INTENSITY_CHECK_MIN_POINTS:
        return None
    top = float(v.max())
    over = float(np.count_nonzero(v > 1.05 * intensity_max)) / v.size
    if over > INTENSITY_OVER_FRACTION:
        return (f"{100 * over:.0f} % of the intensities exceed intensity_max {intensity_max:g} (max {top:g}): "
                "the driver reports on a larger scale; set the rig's intensity_max")
    if intensity_max > 1.5 and 0.0 < top <= 1.0:
        return (f"every intensity is <= 1 (max {top:.3g}) but intensity_max is {intensity_max:g}: a 0-1 sensor "
                "read as 8-bit looks black to the network; set the rig's intensity_max: 1")
    return None


#: RCS the pipeline assumes for a radar detection without an rcs field [dBsm].
UNKNOWN_RCS_DBSM = 0.0
#: Finite RCS values a scan needs before its scale is judged.
RCS_CHECK_MIN_POINTS = 50
#: Plausible radar cross-sections [dBsm]: a pedestrian is about -10, a car 10-20, a truck up to ~40, and
#: the ARS 408 reports -64..63.5; a level outside this is not in dBsm (a raw power, another reference).
RCS_PLAUSIBLE_DBSM = (-70.0, 70.0)
#: Fraction of a scan outside `RCS_PLAUSIBLE_DBSM` that says the driver uses another scale: a driver on
#: the wrong reference puts most detections outside, while a scan of 50-100 detections must not warn
#: for one odd value.
RCS_OUTSIDE_FRACTION = 0.05


def radar_rcs_dbsm(scan: PointCloud, rcs_offset_db: float) -> np.ndarray:
    """Per-detection RCS in dBsm, the network's unit: the driver's `rcs` field + the rig's
    `rcs_offset_db`; a scan without the field reads as `UNKNOWN_RCS_DBSM`. Why per sensor: drivers
    report on different references, and a radar read on the wrong one shows the network every object
    as a wall or as a pedestrian."""
    if not scan.has("rcs"):
        return np.full(len(scan.points), UNKNOWN_RCS_DBSM)
    return np.asarray(scan.points["rcs"], np.float64) + float(rcs_offset_db)


def rcs_scale_mismatch(scan: PointCloud, rcs_offset_db: float) -> str | None:
    """Why this scan's RCS values contradict the rig's `rcs_offset_db`, or None when they do not: more
    than `RCS_OUTSIDE_FRACTION` of them outside `RCS_PLAUSIBLE_DBSM` once offset. Scans without the
    field, with fewer than `RCS_CHECK_MIN_POINTS` finite values or with one constant value (a
    converter's placeholder) are not judged."""
    if not scan.has("rcs"):
        return None
    v = radar_rcs_dbsm(scan, rcs_offset_db)
    v = v[np.isfinite(v)]
    if v.size < RCS_CHECK_MIN_POINTS or float(v.min()) == float(v.max()):
        return None
    lo, hi = RCS_PLAUSIBLE_DBSM
    out = float(np.count_nonzero((v < lo) | (v > hi))) / v.size
    if out <= RCS_OUTSIDE_FRACTION:
        return None
    return (f"{100 * out:.0f} % of the RCS values (rcs + rcs_offset_db {rcs_offset_db:g}) lie outside "
            f"{lo:g}..{hi:g} dBsm (median {float(np.median(v)):.1f}): the driver reports on another scale; "
            "set the rig's rcs_offset_db")


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only); returns whether it applied. Call once at startup.

    By default glibc serves every allocation ≥ 128 kB with a fresh mmap and returns it
    on free, so each 100k-point temporary of a raster costs page faults on first touch:
    measured here, half of `lidar_raster`'s time (6 ms → 3 ms with this). Raising
    the mmap threshold to 32 MB and the trim threshold to 256 MB keeps those pages
    mapped and reused. Process-wide, so the caller decides (the fusion pipeline and
    dataset generation do); harmless elsewhere, a no-op without glibc.
    """
    if _ALLOCATOR_TUNED:
        return _ALLOCATOR_TUNED[0]
    ok = False
    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is not None:
            M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
            ok = bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 256 << 20))
            ok = bool(mallopt(M_TOP_PAD, 64 << 20)) and ok
    except OSError:
        ok = False
    _ALLOCATOR_TUNED.append(ok)
    return ok


def camera_coverage(cam_valid: np.ndarray) -> np.ndarray:
    """Camera field of view in BEV: a cell is covered if any height level of any camera projects into its image.

    `cam_valid` is (n_cameras, n_z, feat_nx, feat_ny) as built by `camera_lift.camera_grid`.
    """
    v = np.asarray(cam_valid)
    if v.ndim != 4:
        raise ValueError(f"cam_valid must be (n_cameras, n_z, H, W), got shape {v.shape}")
    if v.shape[0] == 0:
        return np.zeros(v.shape[2:], np.float32)
    return (v > 0).any(axis=(0, 1)).astype(np.float32)


def _cell_max(cell: np.ndarray, values: np.ndarray, n_cells: int) -> np.ndarray:
    """Per-cell max of non-negative `values` (0 for empty cells) via one lexsort."""
    out = np.zeros(n_cells)
    order = np.lexsort((values, cell))
    c = cell[order]
    last = np.flatnonzero(np.diff(c, append=-1))
    out[c[last]] = values[order][last]
    return out


def _as_points(xyz: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(xyz)
    if a.ndim != 2 or a.shape[1] < 3:
        raise RejectedInput("shape", f"expected (N, 3) points, got shape {a.shape}", what)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return a
