"""sensor_msgs/Image and CompressedImage <-> core Image (docs/DESIGN.md §5).

Raw images are viewed in place: `msg.data` is wrapped in an ndarray whose row
stride is `msg.step`, so row padding and big-endian 16-bit data cost no copy
(the view is simply non-contiguous or byte-swapped). Sizes are validated
before any view is made, because a camera driver that lies about `step` or
`height` must produce a counted rejection, not an out-of-bounds read.

Compressed images follow image_transport's `format` convention
(``"jpeg"``, ``"png"``, ``"rgb8; jpeg compressed bgr8"``): the part before
``;`` is the original encoding, which the decoder restores.

Rejection reasons: ``encoding``, ``empty``, ``step``, ``truncated``,
``size_mismatch``, ``too_large``, ``compressed_decode``.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image as ImageMsg

from ..core.types import Image, RejectedInput
from .stamps import header, stamp_to_ns

#: encoding → (numpy dtype kind+size, channels). Byte order comes from is_bigendian.
ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8UC1": ("u1", 1),
    "8UC3": ("u1", 3),  # treated as bgr8 (OpenCV order) where colour matters
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
}

#: Largest image accepted (pixels): 8K × 8K. Anything larger is a corrupt header.
MAX_PIXELS = 8192 * 8192
#: Largest compressed payload accepted (bytes).
MAX_COMPRESSED_BYTES = 64 * 1024 * 1024


def _layout(encoding: str) -> tuple[str, int]:
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise RejectedInput("encoding", f"unsupported encoding {encoding!r} (have {sorted(ENCODINGS)})", "encoding")
    return layout


def image_msg_to_image(msg: ImageMsg) -> Image:
    """sensor_msgs/Image → Image; a zero-copy (possibly strided) view of `msg.data`."""
    encoding = str(msg.encoding)
    code, channels = _layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise RejectedInput("empty", f"image is {width}x{height}", "width")
    if height * width > MAX_PIXELS:
        raise RejectedInput("too_large", f"{width}x{height} exceeds {MAX_PIXELS} pixels", "width")
    dtype = np.dtype((">" if msg.is_bigendian else "<") + code)
    pixel = dtype.itemsize * channels
    if step < width * pixel:
        raise RejectedInput("step", f"step={step} < width*bytes_per_pixel={width * pixel} for {encoding}", "step")
    size, expected = len(msg.data), height * step
    if size < expected:
        raise RejectedInput("truncated", f"data has {size} bytes, height*step = {expected}", "data")
    if size > expected:
        raise RejectedInput("size_mismatch", f"data has {size} bytes, height*step = {expected}", "data")
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=expected)
    shape: tuple[int, ...] = (height, width, channels) if channels > 1 else (height, width)
    strides: tuple[int, ...] = (step, pixel, dtype.itemsize) if channels > 1 else (step, pixel)
    data = np.ndarray(shape, dtype=dtype, buffer=raw, strides=strides)
    return Image(stamp_to_ns(msg.header.stamp), str(msg.header.frame_id), data, encoding)


def _check_image(img: Image) -> tuple[np.dtype, int]:
    code, channels = _layout(img.encoding)
    data = img.data
    want_ndim = 3 if channels > 1 else 2
    if data.ndim == 3 and channels == 1 and data.shape[2] == 1:
        want_ndim = 3
    if data.ndim != want_ndim or (want_ndim == 3 and data.shape[2] != channels):
        detail = f"{img.encoding} needs {channels} channel(s), data is {data.shape}"
        raise RejectedInput("size_mismatch", detail, "data")
    if f"{data.dtype.kind}{data.dtype.itemsize}" != code:
        raise RejectedInput("encoding", f"{img.encoding} needs dtype {code}, data is {data.dtype}", "data")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise RejectedInput("empty", f"image is {data.shape}", "data")
    return data.dtype, channels


def convert_color(data: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert pixel data between the 8-bit colour/mono encodings (rgb8 bgr8 rgba8 bgra8 mono8)."""
    if src == dst:
        return data
    codes = {
        ("rgb8", "bgr8"): cv2.COLOR_RGB2BGR, ("bgr8", "rgb8"): cv2.COLOR_BGR2RGB,
        ("rgba8", "bgra8"): cv2.COLOR_RGBA2BGRA, ("bgra8", "rgba8"): cv2.COLOR_BGRA2RGBA,
        ("rgba8", "rgb8"): cv2.COLOR_RGBA2RGB, ("bgra8", "bgr8"): cv2.COLOR_BGRA2BGR,
        ("rgba8", "bgr8"): cv2.COLOR_RGBA2BGR, ("bgra8", "rgb8"): cv2.COLOR_BGRA2RGB,
        ("rgb8", "rgba8"): cv2.COLOR_RGB2RGBA, ("bgr8", "bgra8"): cv2.COLOR_BGR2BGRA,
        ("rgb8", "bgra8"): cv2.COLOR_RGB2BGRA, ("bgr8", "rgba8"): cv2.COLOR_BGR2RGBA,
        ("mono8", "rgb8"): cv2.COLOR_GRAY2RGB, ("mono8", "bgr8"): cv2.COLOR_GRAY2BGR,
        ("mono8", "rgba8"): cv2.COLOR_GRAY2RGBA, ("mono8", "bgra8"): cv2.COLOR_GRAY2BGRA,
        ("rgb8", "mono8"): cv2.COLOR_RGB2GRAY, ("bgr8", "mono8"): cv2.COLOR_BGR2GRAY,
        ("rgba8", "mono8"): cv2.COLOR_RGBA2GRAY, ("bgra8", "mono8"): cv2.COLOR_BGRA2GRAY,
    }
    code = codes.get((src, dst))
    if code is None:
        raise RejectedInput("encoding", f"cannot convert {src} to {dst}", "encoding")
    return cv2.cvtColor(np.ascontiguousarray(data), code)


def image_to_image_msg(img: Image, encoding: str | None = None) -> ImageMsg:
    """Image → sensor_msgs/Image, converted to `encoding` if given; one copy of the pixels."""
    dtype, channels = _check_image(img)
    data = img.data
    enc = img.encoding
    if encoding is not None and encoding != enc:
        data = convert_color(data, enc, encoding)
        enc = encoding
        dtype, channels = data.dtype, (data.shape[2] if data.ndim == 3 else 1)
    data = np.ascontiguousarray(data)
    height, width = data.shape[:2]
    msg = ImageMsg()
    msg.header = header(img.stamp_ns, img.frame_id)
    msg.height, msg.width = height, width
    msg.encoding = enc
    msg.is_bigendian = int(dtype.byteorder == ">" or (dtype.byteorder == "=" and not np.little_endian))
    msg.step = width * channels * dtype.itemsize
    buf = array.array("B")
    buf.frombytes(data.reshape(-1).view(np.uint8))
    msg.data = buf
    return msg


def to_rgb8(img: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB for any supported encoding (16-bit → top 8 bits, for display/networks).

    Returns the data itself (no copy) when it already is rgb8.
    """
    enc = img.encoding
    data = img.data
    if enc == "rgb8":
        return data
    if enc in ("bgr8", "rgba8", "bgra8", "8UC3"):
        return convert_color(data, "bgr8" if enc == "8UC3" else enc, "rgb8")
    if enc in ("mono8", "8UC1"):
        return convert_color(data.reshape(data.shape[:2]), "mono8", "rgb8")
    if enc in ("mono16", "16UC1"):
        return convert_color((data.reshape(data.shape[:2]) >> 8).astype(np.uint8), "mono8", "rgb8")
    raise RejectedInput("encoding", f"no RGB view of {enc!r}", "encoding")


# --------------------------------------------------------------------------- compressed


def _parse_format(fmt: str, data: np.ndarray) -> tuple[str, str]:
    """(codec "jpeg"|"png", original encoding or "") from an image_transport format string."""
    text = fmt.strip()
    original = ""
    if ";" in text:
        original, text = (part.strip() for part in text.split(";", 1))
    low = text.lower()
    if "compresseddepth" in low:
        raise RejectedInput("encoding", f"compressedDepth format {fmt!r} is not supported", "format")
    if "jpeg" in low or "jpg" in low:
        return "jpeg", original
    if "png" in low:
        return "png", original
    if not low:  # no format at all: trust the magic bytes
        if data[:3].tobytes() == b"\xff\xd8\xff":
            return "jpeg", original
        if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n":
            return "png", original
    raise RejectedInput("encoding", f"unsupported compressed format {fmt!r}", "format")


def compressed_to_image(msg: CompressedImage) -> Image:
    """sensor_msgs/CompressedImage (JPEG/PNG) → Image in the original encoding when the format names one.

    Without a named original encoding the decoder's native layout is kept
    (bgr8 / bgra8 / mono8 / mono16), which avoids a colour conversion.
    """
    size = len(msg.data)
    if size == 0:
        raise RejectedInput("empty", "compressed image has no data", "data")
    if size > MAX_COMPRESSED_BYTES:
        raise RejectedInput("too_large", f"{size} bytes > {MAX_COMPRESSED_BYTES}", "data")
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    _codec, original = _parse_format(str(msg.format), raw)
    try:
        decoded = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise RejectedInput("compressed_decode", f"OpenCV could not decode: {exc}", "data") from exc
    if decoded is None or decoded.size == 0:
        raise RejectedInput("compressed_decode", f"{size} bytes are not a decodable {msg.format!r} image", "data")
    if decoded.dtype == np.uint16:
        if decoded.ndim != 2:
            raise RejectedInput("encoding", "16-bit colour images are not supported", "data")
        native = "mono16"
    elif decoded.dtype == np.uint8:
        if decoded.ndim == 3 and decoded.shape[2] == 1:
            decoded = decoded[:, :, 0]
        channels = 1 if decoded.ndim == 2 else decoded.shape[2]
        native = {1: "mono8", 3: "bgr8", 4: "bgra8"}.get(channels, "")
        if not native:
            raise RejectedInput("encoding", f"decoded image has {channels} channels", "data")
    else:
        raise RejectedInput("encoding", f"decoded dtype {decoded.dtype} is not supported", "data")
    encoding = native
    if original and original != native:
        if native == "mono16" and original == "16UC1":
            encoding = original
        elif original in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8") and native != "mono16":
            decoded, encoding = convert_color(decoded, native, original), original
    return Image(stamp_to_ns(msg.header.stamp), str(msg.header.frame_id), decoded, encoding)


def image_to_compressed(img: Image, fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    """Image → CompressedImage, `fmt` "jpeg" or "png", format string as image_transport writes it.

    JPEG keeps 3 channels (alpha dropped) or 1; PNG keeps alpha and 16-bit mono.
    `quality` is the JPEG quality 1–100 (ignored for PNG).
    """
    _check_image(img)
    codec = fmt.lower()
    if codec in ("jpg", "jpeg"):
        codec, ext, params = "jpeg", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif codec == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        raise RejectedInput("encoding", f"unsupported compression {fmt!r} (jpeg or png)", "format")
    enc = img.encoding
    data = img.data
    if enc in ("mono16", "16UC1"):
        if codec == "jpeg":
            raise RejectedInput("encoding", f"{enc} cannot be JPEG compressed (use png)", "format")
        target = "mono16"
        data = data.reshape(data.shape[:2]).astype("<u2", copy=False)
    elif enc in ("mono8", "8UC1"):
        target, data = "mono8", data.reshape(data.shape[:2])
    elif enc in ("rgba8", "bgra8") and codec == "png":
        target, data = "bgra8", convert_color(data, enc, "bgra8")
    elif enc in ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3"):
        target, data = "bgr8", convert_color(data, "bgr8" if enc == "8UC3" else enc, "bgr8")
    else:
        raise RejectedInput("encoding", f"{enc} cannot be compressed", "encoding")
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(data), params)
    if not ok:
        raise RejectedInput("compressed_decode", f"OpenCV could not encode {enc} as {codec}", "data")
    msg = CompressedImage()
    msg.header = header(img.stamp_ns, img.frame_id)
    msg.format = f"{enc}; {codec} compressed {target}"
    out = array.array("B")
    out.frombytes(buf.reshape(-1))
    msg.data = out
    return msg
