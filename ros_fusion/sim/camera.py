"""Camera rendered by ray casting the same world the LiDAR sees.

Rays go through the centres of a decimated pixel grid of the *distorted*
image (directions from `cv2.undistortPoints` with the rig's plumb_bob K, D),
so the lens distortion is exact; the shaded low-res image is upsampled to
full size, then sensor noise is added per full-res pixel. Shading: Lambertian
with a sun direction plus sky ambient, sky gradient, road with lane markings,
per-actor paint colours. Noise follows the EMVA 1288 model: shot noise
(variance ∝ signal) and signal-independent read noise, in DN at the output.
Night: sun off, low ambient, the ego's headlights light a cone ahead, the
camera's auto-gain raises noise; rain adds streaks and lens droplets.
Global shutter: all pixels at the capture time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..core.rig import SensorSpec
from ..core.types import CameraInfo, CameraIntrinsics, Image
from .catalog import ALBEDO
from .lidar import lane_marking_mask
from .world import World

DECIMATE = 3  # render every 3rd pixel in x and y (speed), then upsample; edges soften, objects stay
_GAMMA_LUT = (255.0 * (np.arange(4096) / 4095.0) ** (1 / 2.2) + 0.5).astype(np.uint8)
SUN = np.array([0.35, 0.25, 0.90]) / np.linalg.norm([0.35, 0.25, 0.90])  # world frame, sun high


@dataclass
class CameraRays:
    dirs: np.ndarray  # (h*w, 3) unit, optical frame
    shape: tuple[int, int]


_RAY_CACHE: dict[tuple, CameraRays] = {}


def camera_rays(intr: CameraIntrinsics, decimate: int = DECIMATE) -> CameraRays:
    key = (intr.width, intr.height, tuple(np.ravel(intr.K)), tuple(np.ravel(intr.D)), intr.distortion_model, decimate)
    if key in _RAY_CACHE:
        return _RAY_CACHE[key]
    h, w = intr.height // decimate, intr.width // decimate
    us = (np.arange(w) + 0.5) * decimate - 0.5
    vs = (np.arange(h) + 0.5) * decimate - 0.5
    uu, vv = np.meshgrid(us, vs)
    pix = np.stack([uu.ravel(), vv.ravel()], 1).reshape(-1, 1, 2).astype(np.float64)
    K = np.asarray(intr.K, np.float64)
    D = np.asarray(intr.D, np.float64)
    if intr.distortion_model == "equidistant":
        und = cv2.fisheye.undistortPoints(pix, K, D[:4]).reshape(-1, 2)
    else:
        und = cv2.undistortPoints(pix, K, D).reshape(-1, 2)
    d = np.c_[und, np.ones(len(und))]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    _RAY_CACHE[key] = CameraRays(d, (h, w))
    return _RAY_CACHE[key]


def camera_info(spec: SensorSpec, stamp_ns: int) -> CameraInfo:
    return CameraInfo(stamp_ns=stamp_ns, frame_id=spec.frame_id, intrinsics=spec.intrinsics)


def render_camera(world: World, spec: SensorSpec, t: float, rng: np.random.Generator,
                  noise_scale: float = 1.0, stamp_ns: int = 0,
                  noise_bank: dict[str, np.ndarray] | None = None) -> Image:
    intr = spec.intrinsics
    if intr is None:
        raise ValueError(f"camera {spec.name} has no intrinsics in the rig")
    rays = camera_rays(intr)
    T = world.ego.world_from_sensor(t, spec.extrinsic)[0]
    d_w = rays.dirs @ T[:3, :3].T
    o_w = np.broadcast_to(T[:3, 3], d_w.shape)
    hits = world.cast(o_w, d_w, t, near_xy=T[:2, 3])
    night = world.scenario.night
    hit = np.isfinite(hits.t)
    n = len(d_w)
    rgb = np.zeros((n, 3))
    # Albedo per hit.
    alb = ALBEDO[np.clip(hits.material, 0, None)]
    dyn = hits.dynamic & hit
    alb[dyn] = world.actors.rgb[hits.obj[dyn]]
    p = o_w + d_w * np.where(hit, hits.t, 0.0)[:, None]
    road = hit & (hits.road_seg >= 0)
    if road.any():
        s, dd = world.road_sd(p[road], hits.road_seg[road])
        marks = lane_marking_mask(world, s, dd)
        a = alb[road]
        a[marks] = [0.75, 0.75, 0.72]
        # Faint asphalt texture so the road is not a flat colour.
        a *= (0.9 + 0.1 * np.sin(0.7 * s) * np.cos(1.3 * dd))[:, None]
        alb[road] = a
    cos_sun = np.clip(hits.normal @ SUN, 0.0, 1.0)
    if not night:
        light = 0.35 + 0.9 * cos_sun  # sky ambient + direct sun
        sky = np.clip(0.55 + 0.4 * d_w[:, 2:3], 0, 1) * np.array([0.55, 0.70, 0.95])
        exposure = 1.0
    else:
        # Street lights/moonlight ambient + headlight cone ahead of the ego (1/r² falloff).
        fwd = T[:3, 2]
        hd = p - T[:3, 3]
        r = np.linalg.norm(hd, axis=1) + 1e-6
        cone = np.clip((hd @ fwd) / r - 0.85, 0, None) / 0.15
        light = 0.012 + cone * np.clip(60.0 / r**2, 0, 1.5) * np.clip(-(hits.normal * hd).sum(1) / r, 0, 1)
        sky = np.full((n, 1), 0.01) * np.array([0.3, 0.3, 0.5])
        exposure = 4.0  # auto-gain at maximum: brightens, and multiplies noise
    rgb[hit] = alb[hit] * light[hit, None]
    rgb[~hit] = sky[~hit]
    # Haze: distant things fade to the horizon colour.
    fog = 1 - np.exp(-np.where(hit, hits.t, 1e4) / (400.0 if not night else 150.0))
    rgb = rgb * (1 - fog[:, None]) + fog[:, None] * (np.array([0.6, 0.68, 0.8]) if not night else 0.01)
    img = cv2.resize(rgb.reshape(*rays.shape, 3).astype(np.float32), (intr.width, intr.height),
                     interpolation=cv2.INTER_LINEAR)
    img *= exposure * float(spec.model.get("exposure_ms", 8.0)) / 8.0
    if night and world.scenario.rain_mm_h > 0:
        img = _rain(img, rng)
    dn = np.clip(img, 0, 1, out=img)
    dn *= 255.0
    read = float(spec.model.get("read_noise_dn", 2.0))
    shot = float(spec.model.get("shot_noise_scale", 0.6))
    gain = exposure  # analog gain amplifies both shot and read noise in DN
    sigma = cv2.sqrt(cv2.add(cv2.multiply(dn, shot**2 * gain), (read * gain) ** 2))
    sigma *= np.float32(noise_scale)
    dn += _noise_field(dn.shape, rng, noise_bank, spec.name) * sigma
    # sRGB-like gamma for display, 8 bit, through a 4096-entry lookup table.
    idx = np.clip(dn * np.float32(4095.0 / 255.0), 0, 4095).astype(np.uint16)
    out = _GAMMA_LUT[idx]
    return Image(stamp_ns=stamp_ns, frame_id=spec.frame_id, data=np.ascontiguousarray(out), encoding="rgb8")


def _noise_field(shape: tuple[int, ...], rng: np.random.Generator, bank: dict[str, np.ndarray] | None,
                 key: str) -> np.ndarray:
    """Unit Gaussian noise of `shape`: a random window into a bank drawn once per camera.

    Drawing 0.9 M normals per frame costs ~13 ms here; a random offset into a
    bank twice that size keeps every pixel's noise i.i.d. within a frame and
    different between frames at ~1 ms. The bank is drawn from the sensor's own
    generator and held by the caller (one per drive), so determinism holds.
    Without a bank, fresh noise is drawn.
    """
    n = int(np.prod(shape))
    if bank is None:
        return rng.standard_normal(shape, dtype=np.float32)
    if key not in bank or len(bank[key]) != 2 * n:
        bank[key] = rng.standard_normal(2 * n, dtype=np.float32)
    off = int(rng.integers(0, n))
    return bank[key][off: off + n].reshape(shape)


def _rain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Motion-blurred streaks across the frame and blurry droplets on the lens."""
    h, w = img.shape[:2]
    streaks = np.zeros((h, w), np.float32)
    n = 400
    x0 = rng.uniform(0, w, n)
    y0 = rng.uniform(0, h, n)
    ln = rng.uniform(10, 30, n)
    for i in range(n):
        p0 = (int(x0[i]), int(y0[i]))
        p1 = (int(x0[i] + 0.2 * ln[i]), int(y0[i] + ln[i]))
        cv2.line(streaks, p0, p1, 0.08, 1)
    img = img + streaks[..., None]
    drops = np.zeros((h, w), np.float32)
    for _ in range(12):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.circle(drops, c, int(rng.uniform(8, 25)), 1.0, -1)
    drops = cv2.GaussianBlur(drops, (0, 0), 6)[..., None]
    blurred = cv2.GaussianBlur(img, (0, 0), 5)
    return img * (1 - drops) + (blurred * 1.3 + 0.02) * drops
