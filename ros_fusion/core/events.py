"""A stamped sensor message as drives and bags carry it, and the topics every bag has.

The simulator emits a drive as an iterator of `SensorEvent` sorted by
`publish_ns` (the time the message would reach a subscriber: capture + latency +
jitter); the converters write real recordings as the same events. `stamp_ns` is
the capture time that goes into `header.stamp` (docs/DESIGN.md §4). The bag writer
logs each event at `publish_ns`, so a replay reproduces the rig's latencies.
Here in `core` because the simulator, the converters, the bag reader and the
nodes all speak it, and none of them may import another for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import CameraInfo, CompressedImage, Image, ImuSample, Obstacles, Odometry, PointCloud

Payload = PointCloud | Image | CompressedImage | CameraInfo | ImuSample | Odometry | Obstacles

#: Topic of simulated ground truth (docs/DESIGN.md §5), same row layout as `~/obstacles`.
GROUND_TRUTH_TOPIC = "/ground_truth/obstacles"
#: Topic carrying the rig description (std_msgs/String, YAML) so a bag describes itself.
RIG_TOPIC = "/rig"
#: Simulated clocks start here (2023-11-14T22:13:20Z) so stamps look like real
#: captures and never like the 1970 stamps the input checks reject.
SIM_EPOCH_NS = 1_700_000_000 * 1_000_000_000


@dataclass
class SensorEvent:
    sensor: str  # rig sensor name, or "ground_truth"
    topic: str
    stamp_ns: int
    publish_ns: int
    payload: Payload
