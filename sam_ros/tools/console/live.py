"""Live mode without ROS: the targets the sam_ros node reports (masks, ids, IoU, tracking state),
the operator's prompts for them, and the camera view with every target drawn on it.

The ROS adapter (`live_ros`) feeds `on_frame` and `on_result` and publishes what `handle`
returns: `("prompt", PromptSpec)` or `("clear", target_id)`. A click starts a new target or, when
one is selected, adds a point to that target's prompt; the node replaces a target's prompt when
the same id comes again. Prompts name the latest frame (zero stamp): the node keeps only the
frames it has encoded, and the operator sees the newest one.
"""
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import protocol as P
from .view import DrawnMask, compose

LEVELS = ("whole", "part", "subpart")


@dataclass
class PromptSpec:
    """One target's prompt in pixels of the frame: points N x 2, labels N, box or None,
    mask_input (H x W bool, the chosen candidate) or None."""
    target_id: str
    points: List[Tuple[float, float]] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    box: Optional[Tuple[float, float, float, float]] = None
    multimask: bool = True
    mask_input: Optional[np.ndarray] = None


@dataclass
class ObjectView:
    """One ObjectMask as the console keeps it (plain numpy, no ROS types)."""
    target_id: str
    mask: np.ndarray                # crop (h x w bool) at offset
    offset: Tuple[int, int]
    iou: float
    stability: float
    area: int
    source: str = ""
    state: str = ""                 # tracking / occluded / lost / reacquired / ended (when the node sends it)
    propagated: bool = False
    age: int = 0
    candidates: List[Tuple[np.ndarray, Tuple[int, int], float]] = field(default_factory=list)
    chosen: int = -1
    updated: float = 0.0


class LiveSession:
    """State shared by the HTTP threads and the ROS thread (one lock)."""

    image_format = "jpeg"

    def __init__(self, publish=lambda kind, payload: None, on_change=lambda *a, **kw: None, stale_s: float = 5.0) -> None:
        self.publish = publish
        self.on_change = on_change
        self.stale_s = stale_s
        self.lock = threading.Lock()
        self.frame: Optional[np.ndarray] = None
        self.frame_key = 0
        self.frames_received = 0
        self.targets: Dict[str, ObjectView] = {}
        self.prompts: Dict[str, PromptSpec] = {}
        self.selected: Optional[str] = None
        self.info = ""
        self._ids = itertools.count(1)
        self._cleared: Dict[str, float] = {}  # results still in flight for removed targets are ignored
        self._prefix = f"console{os.getpid() % 10000}_"
        self.render_meta = ""
        self.node_connected: Optional[bool] = None  # None: no ROS adapter tells (e.g. tests of the logic)
        self.held = 0                               # prompts the adapter holds until the node is matched

    # ---- from ROS -----------------------------------------------------------------------
    def on_frame(self, rgb: np.ndarray, key: int) -> None:
        with self.lock:
            self.frame, self.frame_key = rgb, key
            self.frames_received += 1
            now = time.monotonic()
            self._cleared = {t: c for t, c in self._cleared.items() if now - c < self.stale_s}
            stale = [t for t, v in self.targets.items() if now - v.updated > self.stale_s and t not in self.prompts]
            for tid in stale:
                del self.targets[tid]  # a target someone else cleared: no result for a while
        self.on_change(bool(stale))

    def set_link(self, connected: bool, held: int) -> None:
        """From the adapter: whether the sam_ros node is matched, and how many prompts wait for it."""
        with self.lock:
            changed = (connected, held) != (self.node_connected, self.held)
            self.node_connected, self.held = connected, held
        if changed:
            self.on_change()

    def on_result(self, objects: List[ObjectView]) -> None:
        now = time.monotonic()
        structural = False  # a target appeared or ended, or changed state or candidates
        with self.lock:
            for o in objects:
                if not o.target_id or o.target_id.startswith("auto/"):
                    continue  # one-shot and automatic masks are not targets
                if now - self._cleared.get(o.target_id, -1e9) < self.stale_s:
                    continue
                if o.state == "ended":
                    structural |= self.targets.pop(o.target_id, None) is not None
                    continue
                o.updated = now
                prev = self.targets.get(o.target_id)
                if not o.candidates and prev is not None and prev.candidates:
                    # Per-frame results carry one mask; the whole / part / subpart choice of the
                    # click stays on offer until the target is prompted again from here.
                    o.candidates, o.chosen = prev.candidates, prev.chosen
                structural |= (prev is None or prev.state != o.state or len(prev.candidates) != len(o.candidates)
                               or prev.chosen != o.chosen)
                self.targets[o.target_id] = o
        # A new target's first mask is drawn at once; a tracked target's next mask (and its
        # scores in the list) go with the next camera frame (one render per frame, not two).
        self.on_change(True, minor=not structural)

    # ---- from the page ------------------------------------------------------------------
    def handle(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        action = msg["action"]
        with self.lock:
            size = P.require_image(None if self.frame is None else self.frame.shape[:2]) \
                if action in ("click", "box") else None
            out: List[Tuple[str, Any]] = []
            result: Dict[str, Any] = {}
            if action == "click":
                x, y = P.point(msg, size)
                label = P.integer(msg, "label", 0, 1, default=1)
                spec = None if msg.get("new") or self.selected is None else self.prompts.get(self.selected)
                if self.selected is not None and spec is None and not msg.get("new"):
                    raise P.ProtocolError(f"target {self.selected} was not started here: its prompt is unknown")
                if spec is None:
                    if label == 0:
                        raise P.ProtocolError("a background click refines the selected target: select one first")
                    spec = PromptSpec(self._prefix + str(next(self._ids)))
                spec.points.append((x, y))
                spec.labels.append(label)
                spec.multimask = len(spec.points) == 1 and spec.box is None
                spec.mask_input = None
                if spec.target_id in self.targets:
                    self.targets[spec.target_id].candidates = []  # the new decode brings its own
                out.append(("prompt", spec))
            elif action == "box":
                spec = PromptSpec(self._prefix + str(next(self._ids)), box=P.box(msg, size), multimask=False)
                out.append(("prompt", spec))
            elif action == "select":
                tid = msg.get("target")
                if tid is not None:
                    tid = P.text(msg, "target")
                    if tid not in self.targets and tid not in self.prompts:
                        raise P.ProtocolError(f"no target {tid!r}")
                self.selected = tid
            elif action == "remove":
                tid = "" if msg.get("all") else P.text(msg, "target", default=self.selected or "")
                if not tid and not msg.get("all"):
                    raise P.ProtocolError("select a target to remove (or remove all)")
                if tid and tid not in self.targets and tid not in self.prompts:
                    raise P.ProtocolError(f"no target {tid!r}")
                out.append(("clear", tid))
                for t in ([tid] if tid else list(self.targets) + list(self.prompts)):
                    self._cleared[t] = time.monotonic()
                    self.targets.pop(t, None)
                    self.prompts.pop(t, None)
                if self.selected == tid or not tid:
                    self.selected = None
            elif action == "choose":
                tid = P.text(msg, "target", default=self.selected or "")
                obj, spec = self.targets.get(tid), self.prompts.get(tid)
                if obj is None or spec is None or not obj.candidates:
                    raise P.ProtocolError(f"target {tid!r} has no whole / part / subpart candidates from this console")
                i = P.integer(msg, "index", 0, len(obj.candidates) - 1)
                crop, (x, y), _ = obj.candidates[i]
                full = np.zeros(self.frame.shape[:2], bool)
                full[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
                spec.mask_input, spec.multimask = full, False
                obj.chosen = i
                out.append(("prompt", spec))
                self.info = f"{tid}: {LEVELS[i] if i < 3 else i} chosen"
            else:
                raise P.ProtocolError(f"unknown action {action!r}")
            for kind, payload in out:
                if kind == "prompt":
                    self.prompts[payload.target_id] = payload
                    self.selected = payload.target_id
                    result["target"] = payload.target_id
        for kind, payload in out:
            self.publish(kind, payload)
        self.on_change()
        return result

    # ---- what the page shows ---------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        with self.lock:
            h, w = self.frame.shape[:2] if self.frame is not None else (0, 0)
            ids = list(self.targets) + [t for t in self.prompts if t not in self.targets]
            targets = []
            for tid in ids:
                o = self.targets.get(tid)
                targets.append({"id": tid, "iou": None if o is None else round(o.iou, 3),
                                "stability": None if o is None else round(o.stability, 3),
                                "area": None if o is None else o.area,
                                "state": "waiting" if o is None else (o.state or "tracking"),
                                "propagated": bool(o and o.propagated), "age": 0 if o is None else o.age,
                                "mine": tid in self.prompts,
                                "candidates": [round(c[2], 3) for c in o.candidates] if o else None})
            return {"mode": "live", "image": {"width": w, "height": h, "frames": self.frames_received},
                    "targets": targets, "selected": self.selected, "info": self.info,
                    "node": {"connected": self.node_connected, "held": self.held}}

    def render(self) -> Optional[np.ndarray]:
        with self.lock:
            if self.frame is None:
                return None
            items = []
            for o in self.targets.values():
                state = o.state if o.state and o.state != "tracking" else ""
                label = f"{o.target_id} {o.iou:.2f} {state}".strip()
                items.append(DrawnMask(o.target_id, o.mask, o.offset, label))
            frame, selected = self.frame, self.selected
            self.render_meta = ",".join(self.targets)  # the targets this frame shows (X-Frame-Meta)
        return compose(frame, items, selected)
