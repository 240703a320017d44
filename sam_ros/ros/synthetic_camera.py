"""A built-in camera: publishes a moving procedural scene as sensor_msgs/Image with sensor-data QoS.

The ground truth (which object is where on each frame) is known, so the demo and the tests can
score the node's masks. Run standalone:
    python -m sam_ros.ros.synthetic_camera --ros-args -p rate:=15.0 -p width:=640 -p height:=480
"""
import sys
import threading
from typing import Dict, List, Optional

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ..data.scenes import Scene, SceneSequence
from . import conversions as conv
from .spin import run_node


class SyntheticCamera(Node):
    """Publishes frames of a SceneSequence on `image` (and `image/compressed` if asked)."""

    def __init__(self, node_name: str = "synthetic_camera", seed: int = 7, width: int = 640, height: int = 480,
                 rate: float = 15.0, encoding: str = "rgb8", compressed: bool = False, frame_id: str = "camera",
                 keep_frames: int = 256, prerender: int = 0, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.seed = self.declare_parameter("seed", seed).value
        self.width = self.declare_parameter("width", width).value
        self.height = self.declare_parameter("height", height).value
        self.rate = self.declare_parameter("rate", rate).value
        self.encoding = self.declare_parameter("encoding", encoding).value
        self.compressed = self.declare_parameter("compressed", compressed).value
        self.frame_id = frame_id
        self.sequence = SceneSequence(self.seed, height=self.height, width=self.width)
        if self.compressed:
            self.pub = self.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
        else:
            self.pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.index = 0
        self.keep_frames = keep_frames
        self.scenes: Dict[int, Scene] = {}   # stamp (ns) -> ground truth, the last keep_frames
        self._lock = threading.Lock()
        # prerender > 0: that many frames are rendered up front and played forwards and backwards
        # (no jump), so that publishing costs the camera almost no CPU (a demo beside the node on
        # a small CPU measures the node, not the renderer).
        self.prerender = int(self.declare_parameter("prerender", prerender).value)
        self._frames: List[Scene] = [self.sequence.frame(t) for t in range(self.prerender)]
        self.timer = self.create_timer(1.0 / self.rate, self.publish_frame)

    def _scene(self, index: int) -> Scene:
        n = len(self._frames)
        if n < 2:
            return self.sequence.frame(index)
        k = index % (2 * n - 2)
        return self._frames[k if k < n else 2 * n - 2 - k]

    def publish_frame(self) -> None:
        scene = self._scene(self.index)
        self.index += 1
        stamp = self.get_clock().now().to_msg()
        if self.compressed:
            import cv2

            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            msg = CompressedImage(format="jpeg")
            msg.data = jpg.tobytes()
        else:
            image = scene.image if self.encoding == "rgb8" else scene.image[..., ::-1]
            msg = conv.fill_image_msg(Image(), image, self.encoding)
        msg.header.stamp = stamp
        msg.header.frame_id = self.frame_id
        with self._lock:
            self.scenes[conv.stamp_key(stamp)] = scene
            while len(self.scenes) > self.keep_frames:
                self.scenes.pop(next(iter(self.scenes)))
        self.pub.publish(msg)

    def scene_at(self, key: int) -> Optional[Scene]:
        with self._lock:
            return self.scenes.get(key)

    def latest(self) -> Optional[Scene]:
        with self._lock:
            return next(reversed(self.scenes.values())) if self.scenes else None


def main(args=None) -> int:
    return run_node(SyntheticCamera, args)


if __name__ == "__main__":
    sys.exit(main())
