"""The managed (lifecycle) node across processes: transitions through the standard lifecycle
services, and what each state does (no model before configure, no topics before activate,
paused when inactive, model freed at cleanup)."""
import os

import pytest

rclpy = pytest.importorskip("rclpy")
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402

from sam_ros.data.scenes import SceneSequence  # noqa: E402

from ros_helpers import NodeProcess  # noqa: E402
from test_ros_node import Client, point_prompt  # noqa: E402

pytestmark = pytest.mark.ros

DOMAIN = 5 + os.getpid() % 150 + 2
NAME = "sam_lc"


def _call(client, srv, request):
    fut = srv.call_async(request)
    assert client.wait(fut.done, 60)
    return fut.result()


def test_lifecycle_transitions_through_the_standard_services(tmp_path):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    proc = NodeProcess(DOMAIN, name=NAME, module="sam_ros.ros.lifecycle_node", params={"prompt_wait_s": 5.0})
    try:
        assert proc.wait_for_log("unconfigured: configure loads the model", 60), proc.log
        c = Client(context, node_name=NAME)
        change = c.node.create_client(ChangeState, f"/{NAME}/change_state")
        get = c.node.create_client(GetState, f"/{NAME}/get_state")
        assert change.wait_for_service(timeout_sec=20) and get.wait_for_service(timeout_sec=20)

        def state() -> int:
            return _call(c, get, GetState.Request()).current_state.id

        def transition(tid: int) -> bool:
            return _call(c, change, ChangeState.Request(transition=Transition(id=tid))).success

        seq = SceneSequence(31, height=240, width=320)

        def segments(t: int, timeout: float = 20.0) -> bool:
            """Frame t, then a click prompt on it: a result arrives?"""
            h = c.publish_image(seq.frame(t).image)
            c.spin(0.3)
            n = len(c.results)
            c.prompt_pub.publish(point_prompt(h, 160, 120, multimask=False))
            return c.wait(lambda: len(c.results) > n, timeout)

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "loaded in" not in proc.log and c.image_pub.get_subscription_count() == 0   # no model, no topics

        # Unconfigured: the model's parameters may change; a missing checkpoint fails configure,
        # saying so, and the node stays unconfigured.
        pc = AsyncParameterClient(c.node, NAME)
        assert pc.wait_for_services(10)
        missing = str(tmp_path / "missing.pth")
        fut = pc.set_parameters_atomically([Parameter("checkpoint", value=missing)])
        assert c.wait(fut.done, 10) and fut.result().result.successful, fut.result().result.reason
        assert not transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert proc.wait_for_log("configure failed: .*missing.pth", 5), proc.log
        fut = pc.set_parameters_atomically([Parameter("checkpoint", value="")])
        assert c.wait(fut.done, 10) and fut.result().result.successful

        assert transition(Transition.TRANSITION_CONFIGURE) and state() == State.PRIMARY_STATE_INACTIVE
        # (the node's log line reaches us through its stdout, possibly after the service's answer)
        assert proc.wait_for_log("loaded in", 10) and c.image_pub.get_subscription_count() == 0   # model, still no topics
        fut = pc.set_parameters_atomically([Parameter("checkpoint", value=missing)])   # configured: restart-only
        assert c.wait(fut.done, 10) and "checkpoint is read at start only" in fut.result().result.reason

        assert transition(Transition.TRANSITION_ACTIVATE) and state() == State.PRIMARY_STATE_ACTIVE
        assert c.wait(lambda: c.image_pub.get_subscription_count() > 0 and c.prompt_pub.get_subscription_count() > 0,
                      20), proc.log
        assert segments(0), proc.log[-2000:]

        # Inactive: paused (its inputs are gone, nothing is published), the model kept.
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == State.PRIMARY_STATE_INACTIVE
        assert c.wait(lambda: c.image_pub.get_subscription_count() == 0 and c.prompt_pub.get_subscription_count() == 0,
                      10)
        assert not segments(1, timeout=2.0)
        assert transition(Transition.TRANSITION_ACTIVATE)
        assert c.wait(lambda: c.image_pub.get_subscription_count() > 0 and c.prompt_pub.get_subscription_count() > 0,
                      20)
        assert segments(2), proc.log[-2000:]
        assert proc.log.count("loaded in") == 1   # activate again did not reload the model

        assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED and proc.wait_for_log("model freed", 5)
        assert transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) and state() == State.PRIMARY_STATE_FINALIZED
        assert proc.proc.poll() is None   # finalized, still answering until stopped
        c.close()
    finally:
        proc.stop()
        rclpy.shutdown(context=context)
