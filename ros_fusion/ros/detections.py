"""Obstacles → vision_msgs/Detection3DArray, for stacks that consume the standard detection type (docs/DESIGN.md §5).

Imported only where vision_msgs is installed (a full ROS distribution; it is not
on PyPI), so importing this module raises ImportError elsewhere and the node
simply does not offer ``~/detections``. Written against the vision_msgs 4.x
(Humble and later) message layout: one Detection3D per obstacle with one
ObjectHypothesisWithPose (class name + score, pose = box pose) and the box as
BoundingBox3D (centre pose, size = length, width, height along the box axes).
Velocity and attribution are not part of Detection3D; ~/obstacles carries them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from vision_msgs.msg import BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesisWithPose

from ..core.transforms import yaw_to_quat
from ..core.types import Obstacles
from .stamps import ns_to_stamp


def obstacles_to_detection3d_array(obs: Obstacles, classes: Sequence[str]) -> Detection3DArray:
    out = Detection3DArray()
    out.header.stamp = ns_to_stamp(obs.stamp_ns)
    out.header.frame_id = obs.frame_id
    for i in range(len(obs)):
        x, y, z, length, width, height, yaw = (float(v) for v in np.asarray(obs.boxes[i][:7], np.float64))
        label = int(obs.labels[i])
        det = Detection3D()
        det.header = out.header
        det.id = str(i)
        q = yaw_to_quat(yaw)
        det.bbox = BoundingBox3D()
        det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.position.z = x, y, z
        (det.bbox.center.orientation.x, det.bbox.center.orientation.y, det.bbox.center.orientation.z,
         det.bbox.center.orientation.w) = (float(v) for v in q)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = length, width, height
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = classes[label] if 0 <= label < len(classes) else f"class_{label}"
        hyp.hypothesis.score = float(obs.scores[i])
        hyp.pose.pose = det.bbox.center
        det.results.append(hyp)
        out.detections.append(det)
    return out
