"""The sam_ros node as a managed (lifecycle) node, for stacks that bring nodes up in order.

The same node as sam_ros.ros.node (parameters, topics, services), driven by the standard
lifecycle services (`~/change_state`, `~/get_state`; `ros2 lifecycle set /sam_ros configure`):

- configure: loads the model (a bad checkpoint fails the transition, saying why; the node
  stays unconfigured and can be configured again after its parameters are fixed);
- activate: subscribes and publishes, starts the session's threads;
- deactivate: pauses: inputs and outputs are closed, the threads stop, targets end; the model
  stays loaded, so activate again is immediate;
- cleanup: frees the model (back to unconfigured);
- shutdown: all of that, from any state.

While unconfigured every parameter may be set (the model's too: they are read at configure);
afterwards the model, topics and thread layout are restart-only, as in the plain node.

Run: python -m sam_ros.ros.lifecycle_node --ros-args --params-file config/sam_ros.yaml
"""
import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ..model.checkpoint import CheckpointError
from .node import SamCore
from .spin import run_node


class SamLifecycleNode(SamCore, LifecycleNode):
    def __init__(self, node_name: str = "sam_ros", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._setup_parameters()
        self.get_logger().info("unconfigured: configure loads the model, activate starts segmenting")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load_model()
        except (CheckpointError, RuntimeError, ValueError, OSError) as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._open()
        except Exception as e:  # e.g. a topic name that does not resolve: close what opened
            self.get_logger().error(f"activate failed: {type(e).__name__}: {e}")
            self._close()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close()
        self.get_logger().info("inactive: inputs and outputs closed, model kept")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._close()
        if self.predictor is not None:
            self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._close()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(SamLifecycleNode, args, startup_errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
