"""CDR bytes <-> rclpy messages, and message type names <-> classes.

Bags and the replay/record tools move *serialized* messages around so that no
conversion happens on the hot path; these helpers are the one place where a
type name from an untrusted bag (``sensor_msgs/msg/PointCloud2``) becomes a
Python class, and where a bad byte string becomes a `RejectedInput` instead of
a crash deep inside rclpy.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from typing import Any

from rclpy.serialization import deserialize_message, serialize_message

from ..core.types import RejectedInput

_TYPE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)/(?:(msg|srv|action)/)?([A-Za-z][A-Za-z0-9_]*)$")


def normalize_msgtype(msgtype: str) -> str:
    """``pkg/Name`` or ``pkg/msg/Name`` -> ``pkg/msg/Name``; anything else is rejected."""
    m = _TYPE_RE.match(msgtype or "")
    if not m:
        raise RejectedInput("msgtype", f"{msgtype!r} is not a ROS 2 type name like 'sensor_msgs/msg/Imu'", "msgtype")
    pkg, sub, name = m.groups()
    return f"{pkg}/{sub or 'msg'}/{name}"


def install_hint(package: str) -> str:
    """What to install to get the Python module of a ROS interface package."""
    dashed = package.replace("_", "-")
    return f"install it: 'apt install ros-$ROS_DISTRO-{dashed}' (ROS mode) or 'pip install ros-{dashed}' (pip mode)"


@lru_cache(maxsize=256)
def message_class(msgtype: str) -> type[Any]:
    """Import the rclpy message class for a type name (cached).

    Raises `RejectedInput('unknown_type', ...)` naming the package to install
    when the interface package is not importable, so a bag with a type this
    machine lacks fails with an actionable line rather than ModuleNotFoundError.
    """
    full = normalize_msgtype(msgtype)
    pkg, sub, name = full.split("/")
    try:
        module = importlib.import_module(f"{pkg}.{sub}")
    except ImportError:
        raise RejectedInput(
            "unknown_type", f"no Python module for {full}: package '{pkg}' is not installed; {install_hint(pkg)}",
            "msgtype",
        ) from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not hasattr(cls, "get_fields_and_field_types"):
        raise RejectedInput("unknown_type", f"package '{pkg}' has no message '{name}' ({full})", "msgtype")
    return cls


def msgtype_of(msg: Any) -> str:
    """``sensor_msgs/msg/PointCloud2`` for an rclpy message instance or class."""
    cls = msg if isinstance(msg, type) else type(msg)
    parts = cls.__module__.split(".")
    if len(parts) < 2 or parts[1] not in ("msg", "srv", "action"):
        raise TypeError(f"{cls.__module__}.{cls.__name__} is not a ROS 2 message class")
    return f"{parts[0]}/{parts[1]}/{cls.__name__}"


def serialize(msg: Any) -> bytes:
    """CDR bytes of an rclpy message (what a bag stores and `Publisher.publish` accepts)."""
    try:
        return serialize_message(msg)
    except Exception as e:  # noqa: BLE001 - rclpy raises bare TypeError/ValueError/RuntimeError
        raise RejectedInput("serialize", f"cannot serialize {type(msg).__name__}: {e}", type(msg).__name__) from None


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """Decode CDR bytes into an rclpy message of `msgtype`.

    Truncated or garbage bytes raise `RejectedInput('deserialize', ...)`; the
    underlying rclpy error text is kept in the detail.
    """
    cls = message_class(msgtype)
    try:
        return deserialize_message(bytes(data), cls)
    except Exception as e:  # noqa: BLE001 - rclpy raises RuntimeError/ValueError for bad CDR
        raise RejectedInput("deserialize", f"{len(data)} bytes are not a valid {msgtype}: {e}", msgtype) from None
