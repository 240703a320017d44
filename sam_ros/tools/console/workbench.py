"""Annotation and review sessions on the engine in-process (no ROS).

Annotate (the assisted-manual stage): images from a folder, a video or a bag; objects start with
clicks or a box, SAM proposes the mask (the previous logits are fed back with each new click),
a brush and an eraser fix it, each object gets a label; saved per image in the data engine's
SA-1B layout in the output folder, where re-opening continues (`console_session.json` names the
image the work stopped at). Review (the semi-automatic stage) is the same session on a
data-engine output folder: annotations are accepted, rejected or edited, missing ones added.
Files are only read below the input folder and written below the output folder.
"""
import json
import os
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np

from ...data.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, _is_bag_dir, open_source
from ..data_engine import _atomic_write
from . import protocol as P
from .annotation import REVIEW_STATES, AnnotatedObject, AnnotationDocument, coco_from_records
from .view import DrawnMask, compose

SESSION_FILE = "console_session.json"
MAX_RADIUS = 200


def inside(root: str, path: str) -> str:
    """The real path of `path` (relative to root, or absolute) if it lies inside root, else ProtocolError."""
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, path))
    if os.path.commonpath([root_real, real]) != root_real:
        raise P.ProtocolError(f"{path!r} is outside the folder the console was started with")
    return real


def extract_frames(source: str, out: str, rate: float, topic: str = "", limit: int = 0) -> List[str]:
    """Frames of a video or bag written as <out>/<name>.jpg (once); returns their names."""
    names = []
    for frame in open_source(source, rate, topic):
        if frame.image is None:
            continue
        path = os.path.join(out, f"{frame.name}.jpg")
        if not os.path.exists(path):
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            _atomic_write(path, jpg.tobytes())
        names.append(frame.name)
        if limit and len(names) >= limit:
            break
    return names


class Workbench:
    """One annotator's session over a list of images. `handle` serves one validated browser
    message; `state` and `render` are what the page shows."""

    image_format = "png"

    def __init__(self, predictor, input_path: str, out: str, review: bool = False, rate: float = 1.0,
                 topic: str = "", limit: int = 0, on_change: Callable[[], None] = lambda: None) -> None:
        self.predictor = predictor
        self.review = review
        self.out = os.path.realpath(out)
        os.makedirs(self.out, exist_ok=True)
        self.on_change = on_change
        self.info = ""
        self.tool = "segment"
        self.selected: Optional[int] = None
        self.root = ""
        self._open_source(os.path.realpath(input_path), rate, topic, limit)
        start = 0
        try:
            with open(os.path.join(self.out, SESSION_FILE)) as f:
                current = json.load(f).get("current")
            start = self.names.index(current) if current in self.names else 0
        except (OSError, ValueError):
            pass
        self.index = -1
        self.goto(start)

    # ---- images --------------------------------------------------------------------------
    def _open_source(self, path: str, rate: float, topic: str, limit: int) -> None:
        if os.path.isdir(path) and not _is_bag_dir(path):
            self.root = path
            self.files = {os.path.splitext(n)[0]: os.path.join(path, n) for n in sorted(os.listdir(path))
                          if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
                          and os.path.isfile(os.path.join(path, n))}
        else:
            if not (os.path.isdir(path) or path.lower().endswith(VIDEO_EXTENSIONS + (".db3", ".mcap"))):
                raise ValueError(f"{path}: not a folder of images, a video or a ROS 2 bag")
            self.root = self.out
            names = extract_frames(path, self.out, rate, topic, limit)
            self.files = {n: os.path.join(self.out, f"{n}.jpg") for n in names}
        self.names = sorted(self.files)
        if not self.names:
            raise ValueError(f"{path}: no images found")

    def goto(self, index: int) -> None:
        if not 0 <= index < len(self.names):
            raise P.ProtocolError(f"image {index} does not exist (there are {len(self.names)})")
        name = self.names[index]
        bgr = cv2.imread(self.files[name], cv2.IMREAD_COLOR)
        if bgr is None:
            raise P.ProtocolError(f"cannot decode image {os.path.basename(self.files[name])}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        json_path = os.path.join(self.out, f"{name}.json")
        doc = AnnotationDocument.load(json_path) if os.path.exists(json_path) else \
            AnnotationDocument(name, image.shape[:2])
        if doc.size != image.shape[:2]:
            raise P.ProtocolError(f"{name}.json is for a {doc.size} image, the image is {image.shape[:2]}")
        self.embedding = self.predictor.encode(image)
        self.image, self.doc, self.index, self.selected = image, doc, index, None
        _atomic_write(os.path.join(self.out, SESSION_FILE), json.dumps({"current": name}).encode())

    # ---- actions -------------------------------------------------------------------------
    def handle(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        action = msg["action"]
        fn = getattr(self, "_do_" + action, None) if action.isidentifier() else None
        if fn is None:
            raise P.ProtocolError(f"unknown action {action!r}")
        if "image" in msg and P.text(msg, "image") != self.doc.name:
            raise P.ProtocolError(f"the action was for image {msg['image']!r}, the console shows {self.doc.name!r}")
        result = fn(msg) or {}
        self.on_change()
        return result

    def _selected_or_new(self, msg: Dict[str, Any]) -> Optional[AnnotatedObject]:
        if msg.get("new"):
            return None
        return self.doc.get(self.selected) if self.selected is not None else None

    def _do_click(self, msg):
        x, y = P.point(msg, self.doc.size)
        label = P.integer(msg, "label", 0, 1, default=1)
        obj = self._selected_or_new(msg)
        if obj is None and label == 0:
            raise P.ProtocolError("a background click refines the selected object: select one (or click foreground)")
        self.doc.checkpoint()
        if obj is None:
            obj = self.doc.add(np.zeros(self.doc.size, bool), source="click")
        obj = self.doc.get(obj.object_id)
        obj.points.append((x, y))
        obj.labels.append(label)
        self._decode(obj)
        self.selected = obj.object_id
        return {"object": obj.object_id}

    def _do_box(self, msg):
        b = P.box(msg, self.doc.size)
        self.doc.checkpoint()
        obj = self.doc.add(np.zeros(self.doc.size, bool), source="box", box=b)
        self._decode(obj)
        self.selected = obj.object_id
        return {"object": obj.object_id}

    def _decode(self, obj: AnnotatedObject) -> None:
        multimask = len(obj.points) == 1 and obj.box is None
        pred = self.predictor.decode(
            self.embedding,
            point_coords=np.asarray(obj.points, np.float64) if obj.points else None,
            point_labels=np.asarray(obj.labels, np.int64) if obj.points else None,
            box=np.asarray(obj.box, np.float64) if obj.box is not None else None,
            mask_input=obj.low_res if obj.low_res is not None and not multimask else None,
            multimask_output=multimask)
        chosen = int(np.argmax(pred.iou_predictions))
        self._take(obj, pred, chosen)
        obj.candidates = pred.masks.copy() if multimask else None
        obj.candidate_ious = [float(v) for v in pred.iou_predictions] if multimask else None
        obj.candidate_low_res = pred.low_res_logits.copy() if multimask else None

    @staticmethod
    def _take(obj: AnnotatedObject, pred, i: int) -> None:
        obj.mask = pred.masks[i].astype(bool)
        obj.iou, obj.stability = float(pred.iou_predictions[i]), float(pred.stability_scores[i])
        obj.low_res = pred.low_res_logits[i][None].copy()
        obj.edited = True

    def _do_choose(self, msg):
        obj = self.doc.get(self._require_selected())
        if obj.candidates is None:
            raise P.ProtocolError("the selected object has no whole / part / subpart candidates")
        i = P.integer(msg, "index", 0, len(obj.candidates) - 1)
        self.doc.checkpoint()
        obj = self.doc.get(obj.object_id)
        obj.mask = obj.candidates[i].copy()
        obj.iou = obj.candidate_ious[i]
        if obj.candidate_low_res is not None:
            obj.low_res = obj.candidate_low_res[i][None].copy()

    def _do_stroke(self, msg):
        pts = P.polyline(msg, self.doc.size)
        radius = P.number(msg, "radius", 0.5, MAX_RADIUS)
        erase = P.text(msg, "mode", choices=("brush", "erase")) == "erase"
        target = None if msg.get("new") else self.selected
        if target is None and erase:
            raise P.ProtocolError("the eraser works on the selected object: select one first")
        obj = self.doc.apply_stroke(target, pts, radius, erase)
        self.selected = obj.object_id
        return {"object": obj.object_id}

    def _require_selected(self) -> int:
        if self.selected is None:
            raise P.ProtocolError("select an object first")
        return self.selected

    def _do_select(self, msg):
        if msg.get("object") is None:
            self.selected = None
            return
        oid = P.integer(msg, "object", 0, 1 << 30)
        try:
            self.doc.get(oid)
        except KeyError:
            raise P.ProtocolError(f"no object {oid} on this image") from None
        self.selected = oid

    def _do_remove(self, msg):
        if msg.get("all"):
            self.doc.checkpoint()
            self.doc.objects = []
            self.selected = None
            return
        oid = self._require_selected() if msg.get("object") is None else P.integer(msg, "object", 0, 1 << 30)
        try:
            self.doc.remove(oid)
        except KeyError:
            raise P.ProtocolError(f"no object {oid} on this image") from None
        if self.selected == oid:
            self.selected = None

    def _do_label(self, msg):
        obj = self.doc.get(self._require_selected())
        label = P.text(msg, "label")
        self.doc.checkpoint()
        self.doc.get(obj.object_id).label = label

    def _do_review(self, msg):
        obj = self.doc.get(self._require_selected())
        status = P.text(msg, "status", choices=REVIEW_STATES + ("",))
        self.doc.checkpoint()
        self.doc.get(obj.object_id).review = status

    def _do_undo(self, msg):
        if not self.doc.undo():
            raise P.ProtocolError("nothing to undo")
        self._fix_selection()

    def _do_redo(self, msg):
        if not self.doc.redo():
            raise P.ProtocolError("nothing to redo")
        self._fix_selection()

    def _fix_selection(self) -> None:
        if self.selected is not None and all(o.object_id != self.selected for o in self.doc.objects):
            self.selected = None

    def _do_save(self, msg):
        path = self.save()
        self.info = f"saved {os.path.basename(path)}"
        return {"saved": os.path.basename(path)}

    def save(self) -> str:
        """Write the image (if the output folder has no copy) and its annotations, atomically."""
        img_path = os.path.join(self.out, self.doc.file_name)
        if not os.path.exists(img_path):
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            _atomic_write(img_path, jpg.tobytes())
        return self.doc.save(self.out)

    def _do_goto(self, msg):
        index = P.integer(msg, "index", 0, max(0, len(self.names) - 1))
        if self.doc.dirty and not msg.get("discard"):
            self.save()
        self.goto(index)

    def _do_next(self, msg):
        self._do_goto({"index": min(self.index + 1, len(self.names) - 1), "discard": msg.get("discard")})

    def _do_prev(self, msg):
        self._do_goto({"index": max(self.index - 1, 0), "discard": msg.get("discard")})

    def _do_tool(self, msg):
        self.tool = P.text(msg, "tool", choices=("segment", "brush", "erase"))

    def _do_open(self, msg):
        """Open another image folder below the input folder (the output folder stays)."""
        path = inside(self.root, P.text(msg, "path", max_len=1000))
        if not os.path.isdir(path):
            raise P.ProtocolError(f"{msg['path']!r} is not a folder")
        old = (self.root, self.files, self.names)
        self._open_source(path, 0, "", 0)
        self.root = old[0]  # stay confined to the folder the console was started with
        try:
            self.goto(0)
        except P.ProtocolError:
            _, self.files, self.names = old
            raise

    def _do_export_coco(self, msg):
        records = []
        for name in self.names:
            p = os.path.join(self.out, f"{name}.json")
            if os.path.exists(p):
                with open(p) as f:
                    records.append(json.load(f))
        path = os.path.join(self.out, "coco.json")
        _atomic_write(path, json.dumps(coco_from_records(records)).encode())
        self.info = f"exported {len(records)} image(s) to coco.json"
        return {"saved": "coco.json"}

    # ---- what the page shows ---------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        h, w = self.doc.size
        objects = []
        for o in self.doc.objects:
            objects.append({"id": o.object_id, "label": o.label, "iou": round(o.iou, 3), "area": int(o.mask.sum()),
                            "review": o.review, "source": o.source, "edited": o.edited,
                            "candidates": o.candidate_ious})
        return {"mode": "review" if self.review else "annotate", "image": {
            "name": self.doc.name, "index": self.index, "count": len(self.names), "width": w, "height": h},
            "objects": objects, "selected": self.selected, "tool": self.tool, "dirty": self.doc.dirty,
            "can_undo": self.doc.can_undo, "can_redo": self.doc.can_redo, "info": self.info}

    def render(self) -> np.ndarray:
        items = []
        for o in self.doc.objects:
            if o.review == "rejected" and o.object_id != self.selected:
                continue  # rejected objects are kept in the file, not drawn
            tag = {"accepted": " ok", "rejected": " rejected"}.get(o.review, "")
            items.append(DrawnMask(str(o.object_id), o.mask, label=f"#{o.object_id} {o.label}{tag}".strip()))
        return compose(self.image, items, selected=None if self.selected is None else str(self.selected))

