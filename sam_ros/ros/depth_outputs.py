"""Depth in the node: an aligned depth image and its CameraInfo in, the targets in 3D out.

The maths lives in sam_ros.engine.depth (ROS-free); this wires it to topics:

- subscribes `depth_topic` (sensor_msgs/Image, 16UC1 millimetres or 32FC1 metres, aligned to the
  colour camera) and `depth_info_topic` (sensor_msgs/CameraInfo; default: `camera_info` beside the
  depth topic, as camera drivers name it), both with sensor-data QoS;
- pairs each target result's colour frame with the depth frame nearest in stamp within
  `depth_slop_s` (colour frames left without one are counted);
- publishes `segmentation/objects3d` (sam_ros/Object3DArray: per target the centroid, an oriented
  box and its extents, in the depth camera's frame with the colour frame's stamp) and
  `segmentation/points` (sensor_msgs/PointCloud2: x, y, z and each point's target label, the same
  value as in segmentation/labels, decimated to `depth_max_points` per target), and where
  vision_msgs is installed `segmentation/detections3d` (vision_msgs/Detection3DArray: id = target
  id, bbox = the oriented box, one hypothesis: class_id = what started the target, score = IoU).

Missing or bad depth (never arriving, holes, no CameraInfo, another size) is reported in the
message's error fields and in diagnostics; colour results keep flowing either way.
"""
import dataclasses
import threading
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from ..engine.depth import DepthError, DepthFrame, DepthPairer, check_frame, object_from_mask
from ..msg import Object3D, Object3DArray
from . import conversions as conv


def default_info_topic(depth_topic: str) -> str:
    """camera_info beside the depth image: /camera/depth/image_raw -> /camera/depth/camera_info."""
    head, _, _ = depth_topic.rpartition("/")
    return f"{head}/camera_info" if head else "camera_info"


class DepthOutputs:
    def __init__(self, node: Any, depth_topic: str, info_topic: str, qos: Any,
                 report: Callable[[str, str], None]) -> None:
        self.node = node
        self.report = report
        self.depth_topic = node.resolve_topic_name(depth_topic)
        self.info_topic = node.resolve_topic_name(info_topic or default_info_topic(depth_topic))
        self.pairer = DepthPairer(slop=node.params.depth_slop_s)
        self.errors = 0                     # depth / CameraInfo messages that could not be used
        self.objects_measured = 0
        self.objects_failed = 0             # targets with no 3D on a paired frame (holes, too small ...)
        self._intrinsics = None
        self._lock = threading.Lock()
        self._subs = [node.create_subscription(Image, self.depth_topic, self._on_depth, qos_profile_sensor_data),
                      node.create_subscription(CameraInfo, self.info_topic, self._on_info, qos_profile_sensor_data)]
        self.pub_objects = node.create_publisher(Object3DArray, "segmentation/objects3d", qos)
        self.pub_points = node.create_publisher(PointCloud2, "segmentation/points", qos)
        try:
            import vision_msgs.msg as vision_msgs  # optional dependency
            self._vision_msgs = vision_msgs
            self.pub_detections = node.create_publisher(vision_msgs.Detection3DArray, "segmentation/detections3d", qos)
        except (ImportError, AttributeError):
            self._vision_msgs, self.pub_detections = None, None

    def destroy(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self.node.destroy_publisher(self.pub_objects)
        self.node.destroy_publisher(self.pub_points)
        if self.pub_detections is not None:
            self.node.destroy_publisher(self.pub_detections)

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            self._intrinsics = conv.camera_info_to_intrinsics(msg)
        except DepthError as e:
            self.errors += 1
            self.report("depth", f"CameraInfo on {self.info_topic}: {e}")

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = conv.depth_msg_to_meters(msg)
        except (conv.ConversionError, DepthError) as e:
            self.errors += 1
            self.report("depth", f"depth image on {self.depth_topic}: {e}")
            return
        frame = DepthFrame(depth, None, conv.stamp_seconds(msg.header.stamp), msg.header.frame_id)
        with self._lock:
            self.pairer.add(frame)

    def stats(self) -> Dict[str, Any]:
        p = self.pairer
        return {"depth_received": p.received, "depth_matched": p.matched, "depth_unmatched": p.unmatched,
                "depth_errors": self.errors, "objects3d_measured": self.objects_measured,
                "objects3d_failed": self.objects_failed}

    def publish(self, header: Any, size: Tuple[int, int], targets: Sequence[Tuple[str, int, Any, str, float]]) -> None:
        """3D of one colour frame's targets: (target id, label, H x W bool mask or None, source,
        predicted IoU) each."""
        params = self.node.params
        stamp = conv.stamp_seconds(header.stamp)
        with self._lock:
            self.pairer.slop = params.depth_slop_s   # a runtime parameter
            frame = self.pairer.match(stamp)
        out = Object3DArray(header=Header(stamp=header.stamp, frame_id=header.frame_id))
        if frame is None:
            last = self.pairer.last_stamp
            out.depth_error = (f"no depth image on {self.depth_topic} yet" if last is None else
                               f"no depth image within {params.depth_slop_s * 1000:.0f} ms of this colour frame "
                               f"(newest depth is {(last - stamp) * 1000:+.0f} ms from it)")
        else:
            frame = dataclasses.replace(frame, intrinsics=self._intrinsics)
            out.header.frame_id = frame.frame_id or header.frame_id
            out.depth_offset_ms = float((frame.stamp - stamp) * 1000)
            try:
                check_frame(frame, size)
            except DepthError as e:
                out.depth_error = str(e)
        if out.depth_error:
            self.report("depth", out.depth_error)
            self.pub_objects.publish(out)
            return
        clouds: List[np.ndarray] = []
        labels: List[np.ndarray] = []
        detections = []
        for target_id, label, mask, source, score in targets:
            if mask is None:
                continue  # absent on this frame: nothing to measure
            obj = Object3D(target_id=target_id, label=label)
            try:
                o3 = object_from_mask(mask, frame, erode_px=params.depth_erode_px, max_points=params.depth_max_points)
            except DepthError as e:
                obj.valid, obj.error = False, str(e)
                self.objects_failed += 1
            else:
                obj.valid = True
                obj.centroid = Point(x=float(o3.centroid[0]), y=float(o3.centroid[1]), z=float(o3.centroid[2]))
                c, q = o3.box_center, o3.box_orientation
                obj.box = Pose(position=Point(x=float(c[0]), y=float(c[1]), z=float(c[2])),
                               orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
                e = o3.box_extents
                obj.extents = Vector3(x=float(e[0]), y=float(e[1]), z=float(e[2]))
                obj.n_points, obj.valid_fraction = int(o3.n_inliers), float(o3.valid_fraction)
                clouds.append(o3.points)
                labels.append(np.full(len(o3.points), label, np.uint16))
                self.objects_measured += 1
                if self.pub_detections is not None:
                    detections.append(self._detection3d(out.header, obj, source, score))
            out.objects.append(obj)
        self.pub_objects.publish(out)
        if self.pub_detections is not None and self.pub_detections.get_subscription_count() > 0:
            self.pub_detections.publish(self._vision_msgs.Detection3DArray(header=out.header, detections=detections))
        if self.pub_points.get_subscription_count() > 0:
            points = np.concatenate(clouds) if clouds else np.zeros((0, 3), np.float32)
            point_labels = np.concatenate(labels) if labels else np.zeros(0, np.uint16)
            self.pub_points.publish(conv.fill_pointcloud2_msg(PointCloud2(), points, out.header, point_labels))

    def _detection3d(self, header: Any, obj: Object3D, source: str, score: float) -> Any:
        vm = self._vision_msgs
        det = vm.Detection3D(header=header, id=obj.target_id)
        det.bbox.center, det.bbox.size = obj.box, obj.extents
        hyp = vm.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = source, float(score)
        hyp.pose.pose.position = obj.centroid
        det.results = [hyp]
        return det
