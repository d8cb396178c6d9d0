"""QoS profiles of ros_fusion, one definition each (DESIGN §5).

Why these: sensor streams are high-rate and only the newest sample matters, so
subscriptions are BEST_EFFORT with a small KEEP_LAST depth — a best-effort
subscription also matches both reliable and best-effort publishers, so any
driver or `ros2 bag play` connects. Outputs are RELIABLE so planners and
recorders do not lose detections. `/rig` is published once and latched
(TRANSIENT_LOCAL) so a late subscriber still learns the rig.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_DEPTH = 5
OUTPUT_DEPTH = 10


def sensor_qos(depth: int = SENSOR_DEPTH) -> QoSProfile:
    """Subscriptions to sensor data: best effort, keep last `depth`, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = OUTPUT_DEPTH) -> QoSProfile:
    """Published results (obstacles, markers, diagnostics): reliable, keep last `depth`, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """`/rig` and other publish-once data: reliable, transient local, keep last 1."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
