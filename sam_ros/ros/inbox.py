"""Subscriptions served by a thread of their own instead of the node's executor.

rclpy's executor is Python: every wake-up rebuilds its wait set from all of the node's entities
(subscriptions, timers, services, the six parameter services) before it runs one callback. For
the node's prompt topics that is most of a click's messaging cost: a ping-pong of small messages
between two processes took 2.0 ms with the echo's subscription on the executor of a node with
a dozen entities, 1.4 ms with the same subscription waited on directly (benchmarks/README.md).

:class:`Inbox` creates subscriptions on the node as usual (they show in the ROS graph under the
node) but in a callback group the executor never waits on, and one thread waits on exactly those
subscriptions, takes every queued message and calls the callback. Callbacks run on that thread,
one at a time, so they must be as short as executor callbacks (store and return).

The thread drives rclpy internals (``rclpy.impl`` WaitSet, subscription handles, the QoS event
handlers' wait-set methods), present in rclpy 7.1 (Jazzy) and 9.1 (Kilted). Where one is missing
(another rclpy), or the wait set fails with an API error at run time, the inbox falls back
cleanly: the executor serves the same subscriptions (mutually exclusive, callbacks guarded the
same way). ``start`` logs which path is in use; ``SAM_ROS_INBOX=executor`` forces the fallback.
"""
import os
import threading
import time
from typing import Any, Callable, List, Optional

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import EventHandler
from rclpy.node import Node

try:
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
except ImportError:  # another rclpy layout: the executor path only
    _rclpy = None

THREAD, EXECUTOR = "thread", "executor"


def missing_internals() -> Optional[str]:
    """The first rclpy internal the inbox thread needs that this rclpy lacks, or None."""
    if _rclpy is None:
        return "rclpy.impl.implementation_singleton.rclpy_implementation"
    needed = [
        (_rclpy, "WaitSet"), (getattr(_rclpy, "WaitSet", None), "clear_entities"),
        (getattr(_rclpy, "WaitSet", None), "add_subscription"),
        (getattr(_rclpy, "WaitSet", None), "add_guard_condition"),
        (getattr(_rclpy, "WaitSet", None), "wait"), (getattr(_rclpy, "WaitSet", None), "get_ready_entities"),
        (getattr(_rclpy, "Subscription", None), "take_message"), (getattr(_rclpy, "Subscription", None), "pointer"),
        (EventHandler, "get_num_entities"), (EventHandler, "add_to_wait_set"), (EventHandler, "is_ready"),
        (EventHandler, "take_data"), (EventHandler, "execute"),
    ]
    for owner, attr in needed:
        if owner is None or not hasattr(owner, attr):
            return f"{getattr(owner, '__name__', 'rclpy internals')}.{attr}"
    return None


def _rclpy_version() -> str:
    try:
        from importlib.metadata import version
        return version("ros-rclpy")
    except Exception:  # a ROS install without pip metadata
        return "(version unknown)"


class _InboxGroup(MutuallyExclusiveCallbackGroup):
    """A callback group that no executor waits on or runs, until :meth:`hand_to_executor`: then
    an ordinary mutually exclusive group."""

    def __init__(self) -> None:
        super().__init__()
        self.by_executor = False

    def hand_to_executor(self) -> None:
        self.by_executor = True

    def can_execute(self, entity: Any) -> bool:
        return self.by_executor and super().can_execute(entity)

    def beginning_execution(self, entity: Any) -> bool:
        return self.by_executor and super().beginning_execution(entity)

    def ending_execution(self, entity: Any) -> None:
        if self.by_executor:
            super().ending_execution(entity)


class Inbox:
    """mode: "auto" (the thread where this rclpy has the internals, else the executor), "thread"
    or "executor"; default from the environment variable SAM_ROS_INBOX, else "auto"."""

    def __init__(self, node: Node, name: str = "inbox",
                 on_error: Optional[Callable[[str], None]] = None, mode: Optional[str] = None) -> None:
        self._node = node
        self._name = name
        mode = mode or os.environ.get("SAM_ROS_INBOX", "auto")
        if mode not in ("auto", THREAD, EXECUTOR):
            raise ValueError(f"inbox mode must be auto, {THREAD} or {EXECUTOR}, not {mode!r}")
        missing = missing_internals()
        if mode == THREAD and missing:
            raise RuntimeError(f"inbox mode 'thread' needs {missing}, which rclpy {_rclpy_version()} lacks")
        self.mode = EXECUTOR if mode == EXECUTOR or missing else THREAD
        self._why = ("SAM_ROS_INBOX/mode asked for it" if mode == EXECUTOR else
                     f"rclpy {_rclpy_version()} lacks {missing}" if missing else "")
        self._group = _InboxGroup()
        if self.mode == EXECUTOR:
            self._group.hand_to_executor()
        self._subs: List[Any] = []
        self._events: List[Any] = []  # QoS event handlers (rclpy Waitables) of those subscriptions
        self._lock = threading.Lock()
        # Wakes the thread when a subscription is added and at stop (in the same group: the
        # executor does not wait on it either).
        self._guard = node.create_guard_condition(lambda: None, callback_group=self._group)
        self._on_error = on_error or (lambda message: node.get_logger().error(message))
        self._running = False
        self._thread = threading.Thread(target=self._loop, name=f"sam_{name}", daemon=True)

    def create_subscription(self, msg_type: Any, topic: str, callback: Callable[[Any], None], qos: Any,
                            **kwargs: Any) -> Any:
        """Node.create_subscription (kwargs pass through) with the callback run by the inbox thread,
        and the subscription's QoS event handlers too (e.g. the warning about a publisher with
        incompatible QoS). Left to the executor, those handlers woke it on every message of the
        subscription (measured: +3 ms per click from the executor's Python competing for the GIL)."""
        sub = None

        def guarded(msg: Any) -> None:  # a callback must not end the thread (nor the executor's spin)
            try:
                callback(msg)
            except Exception as e:
                self._on_error(f"callback for {sub.topic_name if sub else topic} failed: {type(e).__name__}: {e}")

        sub = self._node.create_subscription(msg_type, topic, guarded, qos, callback_group=self._group, **kwargs)
        with self._lock:
            self._subs.append(sub)
            self._events.extend(getattr(sub, "event_handlers", ()))
        self._guard.trigger()
        return sub

    def start(self) -> None:
        """Starts taking messages, and logs which path serves them."""
        logger = self._node.get_logger()
        if self.mode == EXECUTOR:
            logger.info(f"{self._name}: subscriptions served by the executor ({self._why})")
            return
        logger.info(f"{self._name}: subscriptions taken on thread {self._thread.name} "
                    f"(rclpy {_rclpy_version()} wait-set internals)")
        self._running = True
        self._thread.start()

    def _fall_back(self, error: Exception) -> None:
        """Hands the subscriptions to the executor for good (called on the inbox thread)."""
        self.mode, self._why = EXECUTOR, f"the wait set failed: {type(error).__name__}: {error}"
        self._running = False
        self._group.hand_to_executor()
        self._node.get_logger().warning(f"{self._name}: subscriptions now served by the executor ({self._why})")
        executor = self._node.executor
        if executor is not None:
            executor.wake()  # it rebuilds its wait set with them

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the thread (call before the node is destroyed)."""
        was_running, self._running = self._running, False
        if was_running:
            self._guard.trigger()
            self._thread.join(timeout)
        self._node.destroy_guard_condition(self._guard)

    def destroy(self) -> None:
        """stop(), then destroy its subscriptions too (the node lives on: a lifecycle deactivate)."""
        self.stop()
        with self._lock:
            subs, self._subs, self._events = self._subs, [], []
        for sub in subs:
            self._node.destroy_subscription(sub)

    def _loop(self) -> None:
        context = self._node.context
        wait_set, subs, events = None, [], []
        while self._running and context.ok():
            try:
                with self._lock:
                    if wait_set is None or len(self._subs) != len(subs):
                        subs, events = list(self._subs), list(self._events)
                        n_events = sum(h.get_num_entities().num_events for h in events)
                        wait_set = _rclpy.WaitSet(len(subs), 1, 0, 0, 0, n_events, context.handle)
                wait_set.clear_entities()
                for sub in subs:
                    wait_set.add_subscription(sub.handle)
                for handler in events:
                    handler.add_to_wait_set(wait_set)
                wait_set.add_guard_condition(self._guard.handle)
                wait_set.wait(200_000_000)  # ns: the running flag is checked at least 5 times a second
                ready = wait_set.get_ready_entities("subscription")
                ready_events = [h for h in events if h.is_ready(wait_set)]
            except (AttributeError, TypeError) as e:  # this rclpy's internals differ: the executor takes over
                if self._running and context.ok():
                    self._fall_back(e)
                return
            except Exception as e:
                if not (self._running and context.ok()):
                    return  # shutting down
                self._on_error(f"inbox wait failed (retrying): {type(e).__name__}: {e}")
                wait_set = None
                time.sleep(0.1)
                continue
            for handler in ready_events:
                self._run_event(handler)
            for sub in subs:
                if sub.handle.pointer in ready:
                    self._drain(sub)

    def _run_event(self, handler: Any) -> None:
        try:
            with handler:
                data = handler.take_data()
            coroutine = handler.execute(data)  # async in rclpy; runs to completion in one step
            try:
                coroutine.send(None)
            except StopIteration:
                pass
        except Exception as e:
            self._on_error(f"QoS event handler failed: {type(e).__name__}: {e}")

    def _drain(self, sub: Any, max_messages: int = 1000) -> None:
        """Takes what is queued on one subscription (at most max_messages, so that a flood on one
        topic does not hold back the others) and runs the callback on each."""
        for _ in range(max_messages):
            if not self._running:
                return
            try:
                with sub.handle:
                    taken = sub.handle.take_message(sub.msg_type, sub.raw)
            except Exception as e:  # e.g. a message that does not deserialize
                self._on_error(f"could not take a message on {sub.topic_name}: {type(e).__name__}: {e}")
                return
            if taken is None:
                return
            sub.callback(taken[0])  # guarded: see create_subscription
