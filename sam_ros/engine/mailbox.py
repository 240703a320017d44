"""Latest-frame-wins hand-off between the thread that receives frames and the one that encodes them."""
import threading
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox: put() replaces whatever is waiting (counted as dropped); take() blocks
    until an item is there. The encoder never queues frames behind itself."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self._woken = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """The newest item, or None on timeout / wake() / after close()."""
        with self._cond:
            if self._item is None and not self._closed and not self._woken:
                self._cond.wait(timeout)
            self._woken = False
            item, self._item = self._item, None
            return item

    def wake(self) -> None:
        """Make a waiting (or the next) take() return now, with or without an item: the taker
        has other work (e.g. prompts)."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
