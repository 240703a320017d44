"""Running a node as a program: init, build, spin until Ctrl-C or shutdown, clean up; and
spinning an executor on a thread of its own that can be stopped cleanly."""
import sys
import threading
from typing import Callable, Tuple, Type

import rclpy
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args=None,
             startup_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Exit code 0 after a normal shutdown, 2 when the node cannot start (the message says why)."""
    from ..engine.runtime import keep_freed_memory

    keep_freed_memory()
    rclpy.init(args=args)
    try:
        node = make_node()
    except startup_errors as e:
        print(f"[sam_ros] cannot start: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def spin_in_thread(executor, context=None, name: str = "ros") -> Callable[[], None]:
    """Spin `executor` on a daemon thread; returns stop(), which ends the loop between callbacks
    and joins the thread, after which the executor can be shut down and its nodes destroyed. (A
    callback still running when an executor is shut down from another thread finds the
    executor's guard condition already destroyed and raises InvalidHandle, which rclpy prints at
    exit as "exception was never retrieved".)"""
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        try:
            while spinning.is_set() and rclpy.ok(context=context):
                executor.spin_once(timeout_sec=0.05)
        except rclpy.executors.ExternalShutdownException:   # Ctrl-C: the context was shut down
            pass

    thread = threading.Thread(target=spin, daemon=True, name=name)
    thread.start()

    def stop() -> None:
        spinning.clear()
        thread.join(timeout=5)

    return stop
