"""Prompt requests waiting for the model: one bounded queue per input, deadlines, fairness."""
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Tuple, Union

from .prompts import Prompt

# An item's prompt: ready, or a function of the frame's (H, W) and the low-res mask size (a
# message that can only be converted once the frame it names is known).
PromptSource = Union[Prompt, Callable[[Tuple[int, int], int], Prompt]]


@dataclass
class PromptRequest:
    """One incoming request: a prompt, a batch, a click, a detection array."""
    key: int                                  # frame (stamp in ns) the prompts refer to; 0 = latest
    items: List[Tuple[str, PromptSource]]     # (target id, "" = one-shot; prompt)
    source: str = "prompt"                    # what sent it ("prompt", "click", "detection", ...)
    meta: Any = None                          # passed back with the result (e.g. a ROS header)
    received_at: float = field(default_factory=time.monotonic)
    deadline: float = 0.0                     # monotonic time after which it is dropped
    queue: str = ""


class PromptQueue:
    """Bounded per-input queues. A flood on one input drops (and counts) that input's oldest
    requests, never another's; `take` serves the inputs in turn and drops requests that waited
    past their deadline (counted), so nothing is decoded seconds late."""

    def __init__(self, max_pending: int = 100) -> None:
        self.max_pending = max_pending
        self._queues: "OrderedDict[str, Deque[PromptRequest]]" = OrderedDict()
        self._cond = threading.Condition()
        self.received = 0        # prompts (items)
        self.dropped_full = 0    # prompts dropped because their queue was full
        self.dropped_stale = 0   # prompts dropped because they waited past their deadline

    def put(self, req: PromptRequest, queue: str) -> int:
        """Queue a request; returns how many prompts were dropped to make room."""
        dropped = 0
        with self._cond:
            self.received += len(req.items)
            req.queue = queue
            q = self._queues.setdefault(queue, deque())
            while len(q) >= self.max_pending:
                dropped += len(q.popleft().items)
            self.dropped_full += dropped
            q.append(req)
            self._cond.notify_all()
        return dropped

    def put_back(self, reqs: List[PromptRequest]) -> None:
        """Requests taken but not servable yet (their frame is on its way) go back to the front."""
        with self._cond:
            for req in reversed(reqs):
                self._queues.setdefault(req.queue, deque()).appendleft(req)

    def discard(self, target: Callable[[str], bool]) -> int:
        """Drop queued prompts whose target id matches (e.g. of targets just removed)."""
        n = 0
        with self._cond:
            for q in self._queues.values():
                for req in list(q):
                    keep = [it for it in req.items if not target(it[0])]
                    n += len(req.items) - len(keep)
                    req.items[:] = keep
                    if not keep:
                        q.remove(req)
        return n

    def take(self, max_items: int = 256, now: float = 0.0) -> Tuple[List[PromptRequest], List[PromptRequest]]:
        """Up to max_items prompts, one request per input in turn: (to serve, expired)."""
        now = now or time.monotonic()
        out: List[PromptRequest] = []
        expired: List[PromptRequest] = []
        items = 0
        with self._cond:
            while items < max_items and any(self._queues.values()):
                for q in self._queues.values():
                    if not q:
                        continue
                    req = q.popleft()
                    if req.deadline and now > req.deadline:
                        expired.append(req)
                        self.dropped_stale += len(req.items)
                        continue
                    out.append(req)
                    items += len(req.items)
                    if items >= max_items:
                        break
        return out, expired

    def wait(self, timeout: float) -> bool:
        with self._cond:
            if not any(self._queues.values()):
                self._cond.wait(timeout)
            return any(self._queues.values())

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def pending_items(self) -> Dict[str, int]:
        with self._cond:
            return {k: sum(len(r.items) for r in q) for k, q in self._queues.items()}
