"""sensor_msgs/Image and CompressedImage <-> core Image."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import Image as ImageMsg

from ros_fusion.core.types import Image, RejectedInput
from ros_fusion.ros.image import (
    compressed_to_image,
    image_msg_to_image,
    image_to_compressed,
    image_to_image_msg,
    to_rgb8,
)
from ros_fusion.ros.stamps import ns_to_stamp

# encoding -> (dtype, channels), written independently of the module's table
LAYOUTS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
}


def _pixels(encoding: str, h: int, w: int, seed: int) -> np.ndarray:
    dtype, ch = LAYOUTS[encoding]
    shape = (h, w) if ch == 1 else (h, w, ch)
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _raw_msg(pixels: np.ndarray, encoding: str, pad: int, big: bool) -> ImageMsg:
    """Hand-built message with `pad` bytes of garbage after each row."""
    h, w = pixels.shape[:2]
    rows = pixels.astype(pixels.dtype.newbyteorder(">" if big else "<")).reshape(h, -1).view(np.uint8)
    padded = np.full((h, rows.shape[1] + pad), 0xAB, np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = ImageMsg()
    msg.header.stamp = ns_to_stamp(123_000_000_001)
    msg.header.frame_id = "camera_front_optical"
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = int(big)
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


@settings(max_examples=120, deadline=None)
@given(
    encoding=st.sampled_from(sorted(LAYOUTS)),
    h=st.integers(1, 17),
    w=st.integers(1, 23),
    pad=st.sampled_from([0, 0, 1, 3, 16]),
    big=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_raw_round_trip_all_encodings_with_step_padding_and_endianness(encoding, h, w, pad, big, seed):
    pixels = _pixels(encoding, h, w, seed)
    msg = _raw_msg(pixels, encoding, pad, big)
    img = image_msg_to_image(msg)
    assert (img.encoding, img.stamp_ns, img.frame_id) == (encoding, 123_000_000_001, "camera_front_optical")
    np.testing.assert_array_equal(img.data, pixels)
    assert np.shares_memory(img.data, np.frombuffer(msg.data, np.uint8))  # zero-copy even when padded

    out = image_to_image_msg(img)
    assert out.step == w * pixels.dtype.itemsize * LAYOUTS[encoding][1]
    assert len(out.data) == out.step * h
    np.testing.assert_array_equal(image_msg_to_image(out).data, pixels)


def test_to_rgb8_from_each_encoding():
    rgb = _pixels("rgb8", 4, 5, 1)
    assert to_rgb8(Image(0, "c", rgb, "rgb8")) is rgb
    np.testing.assert_array_equal(to_rgb8(Image(0, "c", rgb[:, :, ::-1], "bgr8")), rgb)
    rgba = np.dstack([rgb, np.full((4, 5), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb8(Image(0, "c", rgba, "rgba8")), rgb)
    np.testing.assert_array_equal(to_rgb8(Image(0, "c", rgba[:, :, [2, 1, 0, 3]], "bgra8")), rgb)
    mono = rgb[:, :, 0]
    assert (to_rgb8(Image(0, "c", mono, "mono8")) == mono[:, :, None]).all()
    mono16 = mono.astype(np.uint16) << 8 | 0x55
    np.testing.assert_array_equal(to_rgb8(Image(0, "c", mono16, "mono16"))[:, :, 2], mono)


def test_encoding_conversion_on_write():
    rgb = _pixels("rgb8", 3, 4, 2)
    msg = image_to_image_msg(Image(0, "c", rgb, "rgb8"), encoding="bgr8")
    assert msg.encoding == "bgr8"
    np.testing.assert_array_equal(image_msg_to_image(msg).data, rgb[:, :, ::-1])


def _smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1"])
def test_png_round_trip_is_lossless(encoding):
    pixels = _pixels(encoding, 9, 13, 3)
    msg = image_to_compressed(Image(5, "cam", pixels, encoding), "png")
    assert msg.format.startswith(f"{encoding}; png compressed")
    back = compressed_to_image(msg)
    assert back.encoding == encoding and back.stamp_ns == 5 and back.frame_id == "cam"
    np.testing.assert_array_equal(back.data, pixels)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_jpeg_round_trip_is_close(encoding):
    rgb = _smooth_rgb()
    pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1].copy(), "mono8": rgb[:, :, 1].copy()}[encoding]
    msg = image_to_compressed(Image(0, "cam", pixels, encoding), "jpeg", quality=95)
    assert msg.format == f"{encoding}; jpeg compressed {'mono8' if encoding == 'mono8' else 'bgr8'}"
    back = compressed_to_image(msg)
    assert back.encoding == encoding and back.data.shape == pixels.shape
    assert np.abs(back.data.astype(int) - pixels).mean() < 3.0


def test_plain_format_strings_keep_decoder_layout():
    rgb = _smooth_rgb()
    for fmt in ("jpeg", "png", ""):
        msg = image_to_compressed(Image(0, "cam", rgb, "rgb8"), fmt or "png")
        msg.format = fmt
        back = compressed_to_image(msg)
        assert back.encoding == "bgr8"  # no original encoding named → OpenCV's native order
        assert np.abs(to_rgb8(back).astype(int) - rgb).mean() < 3.0


def test_jpeg_of_16bit_is_refused():
    with pytest.raises(RejectedInput) as err:
        image_to_compressed(Image(0, "c", np.zeros((2, 2), np.uint16), "16UC1"), "jpeg")
    assert err.value.reason == "encoding"


def test_compressed_garbage_is_rejected():
    msg = CompressedImage()
    msg.format = "jpeg"
    msg.data = b"\xff\xd8\xff" + bytes(range(200))
    with pytest.raises(RejectedInput) as err:
        compressed_to_image(msg)
    assert err.value.reason == "compressed_decode"
