"""Camera side of the network input: image normalisation and the camera→BEV sampling grid (docs/DESIGN.md §7).

The network lifts image features to BEV by bilinear sampling (`grid_sample`,
align_corners=False) at the projections of 3D points: for every FEAT×FEAT BEV
cell centre at every height of `CAM_Z_LEVELS`. Those projections depend only on
calibration and on where the camera was when it captured, so they are computed
here in numpy and fed to the network as the `cam_grid`/`cam_valid` inputs: a new
calibration, a different camera or ego motion between capture and T needs no
re-export.

Normalised coordinates are relative to the *original* image (pixel centre u ↦
(u + 0.5)/W·2 − 1), and the image is resized whole (no crop), so the same grid
is valid for the image at any network resolution.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import network_io as nio
from .bev import BevGrid
from .transforms import invert_transform
from .types import CameraIntrinsics, RejectedInput

#: Points closer than this in front of the camera (optical z, m) are invalid (behind or at the lens).
MIN_DEPTH_M = 0.1
#: Value of invalid `cam_grid` entries: outside [-1, 1], so grid_sample reads zero padding there.
INVALID = -2.0


# ----------------------------------------------------------------------------- images
def resize_image(data: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
    """Any supported 8-bit image → (CAM_H, CAM_W, 3) uint8 RGB (area-averaged when shrinking).

    Kept separate from `normalise_image` so datasets can store the compact uint8 form.
    """
    a = np.asarray(data)
    if a.dtype != np.uint8:
        raise RejectedInput("encoding", f"expected 8-bit image data, got {a.dtype}", "image")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        if encoding not in ("mono8", "8UC1"):
            raise RejectedInput("encoding", f"2-D image data with encoding {encoding!r}", "image")
        a = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        enc = encoding.lower()
        if enc in ("rgb8", "8uc3"):
            a = a[..., :3]
        elif enc == "bgr8":
            a = a[..., 2::-1]
        elif enc == "rgba8":
            a = a[..., :3]
        elif enc == "bgra8":
            a = a[..., 2::-1]
        else:
            raise RejectedInput("encoding", f"unsupported encoding {encoding!r} for 3-channel data", "image")
    else:
        raise RejectedInput("shape", f"expected (H, W), (H, W, 3) or (H, W, 4), got {a.shape}", "image")
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise RejectedInput("shape", f"image too small: {a.shape[1]}x{a.shape[0]}", "image")
    a = np.ascontiguousarray(a)
    if a.shape[:2] == (nio.CAM_H, nio.CAM_W):
        return a
    shrink = a.shape[0] > nio.CAM_H or a.shape[1] > nio.CAM_W
    return cv2.resize(a, (nio.CAM_W, nio.CAM_H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


_MEAN = np.array(nio.CAM_MEAN, np.float32).reshape(3, 1, 1)
_INV_STD = (1.0 / np.array(nio.CAM_STD, np.float32)).reshape(3, 1, 1)


def normalise_image(rgb_small: np.ndarray) -> np.ndarray:
    """(CAM_H, CAM_W, 3) uint8 RGB → (3, CAM_H, CAM_W) float32, (x/255 − mean)/std (ImageNet statistics)."""
    a = np.asarray(rgb_small)
    if a.shape != (nio.CAM_H, nio.CAM_W, 3) or a.dtype != np.uint8:
        raise RejectedInput("shape", f"expected ({nio.CAM_H}, {nio.CAM_W}, 3) uint8, got {a.shape} {a.dtype}",
                            "image")
    chw = a.transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)
    return (chw - _MEAN) * _INV_STD


def prepare_image(data: np.ndarray, encoding: str = "rgb8") -> np.ndarray:
    """`resize_image` then `normalise_image`: what the network's `images` input holds per camera."""
    return normalise_image(resize_image(data, encoding))


# ----------------------------------------------------------------------------- projection
def distort(xn: np.ndarray, yn: np.ndarray, intr: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised undistorted coords → distorted, plus where the model is trustworthy.

    Polynomial lens models fold back on themselves far outside the field of view
    (a point at 150° off-axis can land inside the image); such points are marked
    unreliable: radial distortion must be increasing in the undistorted radius.
    Models: plumb_bob (k1 k2 p1 p2 k3), rational_polynomial (k1 k2 p1 p2 k3 k4 k5 k6),
    equidistant (fisheye k1..k4, angle-based).
    """
    D = np.asarray(intr.D, np.float64).reshape(-1)
    model = intr.distortion_model
    if model == "equidistant":
        k = np.zeros(4)
        k[: min(4, len(D))] = D[:4]
        r = np.hypot(xn, yn)
        th = np.arctan(r)
        th2 = th * th
        thd = th * (1 + th2 * (k[0] + th2 * (k[1] + th2 * (k[2] + th2 * k[3]))))
        scale = np.where(r > 1e-12, thd / np.maximum(r, 1e-12), 1.0)
        ok = _monotone_upto(lambda t: t * (1 + t**2 * (k[0] + t**2 * (k[1] + t**2 * (k[2] + t**2 * k[3])))),
                            np.pi / 2, th)
        return xn * scale, yn * scale, ok
    if model not in ("plumb_bob", "rational_polynomial"):
        raise RejectedInput("distortion_model", f"unsupported distortion model {model!r}", "camera_info")
    c = np.zeros(8)
    c[: min(8, len(D))] = D[:8]
    k1, k2, p1, p2, k3, k4, k5, k6 = c

    def radial(r2):
        return (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))

    r2 = xn * xn + yn * yn
    f = radial(r2)
    xd = xn * f + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * f + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    ok = _monotone_upto(lambda r: r * radial(r * r), 20.0, np.sqrt(r2)) & (f > 0)
    return xd, yd, ok


def _monotone_upto(fn, r_end: float, r: np.ndarray) -> np.ndarray:
    """True where r is below the first radius at which `fn` (distorted radius) stops increasing."""
    rs = np.linspace(0.0, r_end, 4001)
    d = np.diff(fn(rs))
    bad = np.flatnonzero(d <= 0)
    r_max = rs[bad[0]] if bad.size else np.inf
    return r < r_max


def project_points(points_cam: np.ndarray, intr: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points in the optical frame → (N, 2) pixel coords (u, v) of the raw image, and valid mask.

    Valid: in front of the camera (z ≥ MIN_DEPTH_M), inside the lens model's
    trustworthy range, and inside the image (pixel centres span −0.5 … W − 0.5).
    """
    p = np.asarray(points_cam, np.float64)
    z = p[:, 2]
    front = z >= MIN_DEPTH_M
    zs = np.where(front, z, 1.0)
    xd, yd, ok = distort(p[:, 0] / zs, p[:, 1] / zs, intr)
    K = np.asarray(intr.K, np.float64)
    u = K[0, 0] * xd + K[0, 1] * yd + K[0, 2]
    v = K[1, 1] * yd + K[1, 2]
    uv = np.stack([u, v], axis=1)
    inside = (u >= -0.5) & (u < intr.width - 0.5) & (v >= -0.5) & (v < intr.height - 0.5)
    return uv, front & ok & inside & np.isfinite(u) & np.isfinite(v)


def pixel_to_grid(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates → grid_sample coordinates in [-1, 1] (align_corners=False)."""
    g = np.empty_like(np.asarray(uv, np.float64))
    g[..., 0] = (uv[..., 0] + 0.5) / width * 2.0 - 1.0
    g[..., 1] = (uv[..., 1] + 0.5) / height * 2.0 - 1.0
    return g


def check_intrinsics(intr: CameraIntrinsics) -> None:
    K = np.asarray(intr.K, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise RejectedInput("intrinsics", f"K must be a finite 3x3 with fx, fy > 0, got {K.tolist()}", "camera_info")
    if intr.width < 2 or intr.height < 2:
        raise RejectedInput("intrinsics", f"image size {intr.width}x{intr.height} too small", "camera_info")
    if not np.isfinite(np.asarray(intr.D, np.float64)).all():
        raise RejectedInput("intrinsics", "distortion coefficients must be finite", "camera_info")


def camera_grid(intr: CameraIntrinsics, extrinsic: np.ndarray, ego_pose: np.ndarray | None = None,
                grid: BevGrid | None = None, z_levels: tuple[float, ...] = nio.CAM_Z_LEVELS,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Sampling grid of one camera: (n_z, FEAT, FEAT, 2) float32 and validity (n_z, FEAT, FEAT) float32.

    `extrinsic` maps the camera's optical frame → base_link. `ego_pose` is base_link
    at the camera's capture time expressed in base_link at the fusion time T
    (identity when captured at T): a BEV point p (base_link at T) is seen by the
    camera at inv(ego_pose @ extrinsic) @ p. Entry [k, i, j] is the image position
    of the centre of feature cell (i, j) (row i along x, column j along y) at height
    z_levels[k]; invalid entries hold INVALID in both coordinates.
    """
    check_intrinsics(intr)
    grid = grid or BevGrid()
    E = np.asarray(extrinsic, np.float64)
    P = np.eye(4) if ego_pose is None else np.asarray(ego_pose, np.float64)
    for name, M in (("extrinsic", E), ("ego_pose", P)):
        if M.shape != (4, 4) or not np.isfinite(M).all():
            raise RejectedInput("transform", f"{name} must be a finite 4x4 matrix", "camera")
    cam_from_bev = invert_transform(P @ E)
    cx, cy = grid.cell_centres(grid.stride)
    nz = len(z_levels)
    pts = np.empty((nz, *cx.shape, 3))
    pts[..., 0] = cx
    pts[..., 1] = cy
    pts[..., 2] = np.asarray(z_levels, np.float64)[:, None, None]
    pc = pts.reshape(-1, 3) @ cam_from_bev[:3, :3].T + cam_from_bev[:3, 3]
    uv, valid = project_points(pc, intr)
    g = pixel_to_grid(uv, intr.width, intr.height)
    g[~valid] = INVALID
    return (g.reshape(nz, *cx.shape, 2).astype(np.float32),
            valid.reshape(nz, *cx.shape).astype(np.float32))
