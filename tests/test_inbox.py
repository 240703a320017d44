"""sam_ros.ros.inbox: subscriptions taken by a thread of their own, not by the executor.

A publisher in another process (real DDS); the inbox and an executor-served subscription in this
one."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.event_handler import SubscriptionEventCallbacks  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from sam_ros.ros.inbox import Inbox  # noqa: E402

from ros_helpers import ros_env  # noqa: E402

pytestmark = pytest.mark.ros

DOMAIN = 30 + os.getpid() % 150
QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)

PUBLISHER = textwrap.dedent("""
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    rclpy.init()
    node = rclpy.create_node("inbox_test_publisher")
    qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    to_inbox = node.create_publisher(String, "to_inbox", qos)
    to_executor = node.create_publisher(String, "to_executor", qos)
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    mismatched = node.create_publisher(String, "to_inbox_reliable", best_effort)
    end = time.monotonic() + 30
    while (to_inbox.get_subscription_count() == 0 or to_executor.get_subscription_count() == 0) and time.monotonic() < end:
        time.sleep(0.02)
    for i in range(60):
        to_inbox.publish(String(data="boom" if i == 10 else str(i)))
        if i % 10 == 0:
            to_executor.publish(String(data=str(i)))
        time.sleep(0.002)
    time.sleep(2.0)  # reliable delivery completes before the writer goes away
""")


def test_inbox_takes_its_topics_on_its_own_thread_beside_the_executor():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    node = rclpy.create_node("inbox_test", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    inbox_msgs, inbox_threads, errors, executor_msgs = [], set(), [], []

    def on_inbox(msg):
        inbox_threads.add(threading.current_thread().name)
        if msg.data == "boom":
            raise ValueError("a callback that fails")
        inbox_msgs.append(int(msg.data))

    inbox = Inbox(node, "test_inbox", on_error=errors.append)
    inbox.create_subscription(String, "to_inbox", on_inbox, QOS)
    # QoS events of an inbox subscription are the inbox's too: a best-effort publisher on a
    # reliable subscription is reported there.
    incompatible = []
    events = SubscriptionEventCallbacks(
        incompatible_qos=lambda event: incompatible.append(threading.current_thread().name))
    mismatch = inbox.create_subscription(String, "to_inbox_reliable", on_inbox, QOS, event_callbacks=events)
    assert not ex.can_execute(mismatch) and not any(ex.can_execute(h) for h in mismatch.event_handlers)
    node.create_subscription(String, "to_executor",
                             lambda m: executor_msgs.append((threading.current_thread().name, int(m.data))), QOS)
    # Started after the publisher matched: messages wait in DDS until the thread takes them.
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=ros_env(DOMAIN))
    try:
        end = time.monotonic() + 30
        while node.count_publishers("to_inbox") == 0 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        time.sleep(0.5)
        inbox.start()
        while (len(inbox_msgs) < 59 or len(executor_msgs) < 6 or not incompatible) and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)  # the executor runs only its own subscription
        assert pub.wait(timeout=30) == 0
    finally:
        if pub.poll() is None:
            pub.kill()
        inbox.stop()
        thread_alive = inbox._thread.is_alive()
        ex.remove_node(node)
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    assert inbox_msgs == [i for i in range(60) if i != 10]  # all, in order, after a failing callback
    assert inbox_threads == {"sam_test_inbox"}
    assert len(errors) == 1 and "a callback that fails" in errors[0] and "to_inbox" in errors[0]
    assert [i for _, i in executor_msgs] == [0, 10, 20, 30, 40, 50]
    assert all(name != "sam_test_inbox" for name, _ in executor_msgs)
    assert not thread_alive
    assert incompatible and incompatible[0] == "sam_test_inbox"


def test_inbox_runs_on_this_rclpy_and_falls_back_to_the_executor_cleanly(capfd):
    """The wait-set internals the thread drives exist in the installed rclpy (Kilted and Jazzy are
    both run by CI); with mode="executor" (what a rclpy without them gets) the same subscriptions
    are served by the executor, callbacks guarded the same way, and the log says which path."""
    from sam_ros.ros.inbox import EXECUTOR, missing_internals
    assert missing_internals() is None
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN + 1)
    node = rclpy.create_node("inbox_fallback_test", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    got, threads, errors = [], set(), []

    def on_msg(msg):
        threads.add(threading.current_thread().name)
        if msg.data == "boom":
            raise ValueError("a callback that fails")
        got.append(int(msg.data))

    inbox = Inbox(node, "fallback_inbox", on_error=errors.append, mode=EXECUTOR)
    sub = inbox.create_subscription(String, "to_inbox", on_msg, QOS)
    assert inbox.mode == EXECUTOR and ex.can_execute(sub)
    node.create_subscription(String, "to_executor", lambda m: None, QOS)  # the publisher waits for both
    inbox.start()
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=ros_env(DOMAIN + 1))
    try:
        end = time.monotonic() + 30
        while len(got) < 59 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        assert pub.wait(timeout=30) == 0
    finally:
        if pub.poll() is None:
            pub.kill()
        inbox.stop()
        ex.remove_node(node)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    assert got == [i for i in range(60) if i != 10]
    assert threads == {threading.current_thread().name}  # the executor's (spun here)
    assert len(errors) == 1 and "a callback that fails" in errors[0] and "to_inbox" in errors[0]
    assert "fallback_inbox: subscriptions served by the executor" in capfd.readouterr().err
    with pytest.raises(ValueError, match="inbox mode"):
        Inbox(node, mode="threads")
