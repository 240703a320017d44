"""A bounded cache of recently encoded frames: prompts decode on the embedding of the frame they name."""
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from .predictor import ImageEmbedding


@dataclass
class CachedFrame:
    """An encoded frame: its embedding, the frame's metadata (e.g. a ROS header) and image."""
    key: int                      # e.g. the stamp in nanoseconds
    embedding: ImageEmbedding
    meta: Any = None
    image: Optional[np.ndarray] = None
    encoder_ms: float = 0.0
    received_at: float = 0.0
    stamp: float = 0.0            # seconds (source time)
    flow: Any = None              # the frame's optical-flow view (tracking.flow.FlowFrame)


class EmbeddingCache:
    """The last `capacity` encoded frames by key; memory stays bounded whatever the uptime."""

    def __init__(self, capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError("cache capacity must be at least 1")
        self.capacity = capacity
        self._frames: "OrderedDict[int, CachedFrame]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, frame: CachedFrame) -> None:
        with self._lock:
            self._frames[frame.key] = frame
            self._frames.move_to_end(frame.key)
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)

    def get(self, key: int) -> Optional[CachedFrame]:
        with self._lock:
            return self._frames.get(key)

    def latest(self) -> Optional[CachedFrame]:
        with self._lock:
            return next(reversed(self._frames.values())) if self._frames else None

    def keys(self) -> List[int]:
        with self._lock:
            return list(self._frames)

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
