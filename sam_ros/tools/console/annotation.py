"""One image's annotation: objects (full-size masks with their prompts, a label, a review
status), brush and eraser strokes, undo/redo, and the files: the data engine's SA-1B layout
(`<name>.json` beside `<name>.jpg`, COCO RLE masks) and a COCO export of a whole folder."""
import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...engine.mask_utils import area_from_rle, encode_rle, mask_to_rle, rle_to_mask
from ..data_engine import _atomic_write

REVIEW_STATES = ("accepted", "rejected")
UNDO_DEPTH = 50


@dataclass
class AnnotatedObject:
    """mask: H x W bool. points: N x 2 (x, y), labels: N (1 fg / 0 bg), box: x0, y0, x1, y1 or None.
    `record` keeps the fields of an annotation read from a file (predicted_iou, crop_box, ...)."""
    object_id: int
    mask: np.ndarray
    label: str = ""
    points: List[Tuple[float, float]] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    box: Optional[Tuple[float, float, float, float]] = None
    iou: float = 0.0
    stability: float = 0.0
    review: str = ""
    source: str = "console"
    edited: bool = False
    record: Dict[str, Any] = field(default_factory=dict)
    low_res: Optional[np.ndarray] = None     # 1 x L x L logits of the last decode (the next click's mask prompt)
    candidates: Optional[np.ndarray] = None  # 3 x H x W masks when the model offered whole / part / subpart
    candidate_ious: Optional[List[float]] = None
    candidate_low_res: Optional[np.ndarray] = None  # 3 x L x L


def stroke_mask(size: Tuple[int, int], points: Sequence[Tuple[float, float]], radius: float) -> np.ndarray:
    """H x W bool: the pixels (x = column, y = row) within `radius` of the polyline `points`
    (a single point paints a disc)."""
    h, w = size
    out = np.zeros((h, w), bool)
    pts = [np.asarray(p, np.float64) for p in points]
    segments = list(zip(pts[:-1], pts[1:])) if len(pts) > 1 else [(pts[0], pts[0])]
    for a, b in segments:
        x0 = int(max(0, np.floor(min(a[0], b[0]) - radius)))
        x1 = int(min(w - 1, np.ceil(max(a[0], b[0]) + radius)))
        y0 = int(max(0, np.floor(min(a[1], b[1]) - radius)))
        y1 = int(min(h - 1, np.ceil(max(a[1], b[1]) + radius)))
        if x1 < x0 or y1 < y0:
            continue
        yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        d = b - a
        length2 = float(d @ d)
        t = np.zeros_like(xx) if length2 == 0 else np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / length2, 0, 1)
        dist2 = (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2
        out[y0:y1 + 1, x0:x1 + 1] |= dist2 <= radius * radius
    return out


def mask_bbox(mask: np.ndarray) -> List[int]:
    """XYWH of a bool mask (COCO: width = right - left + 1), [0, 0, 0, 0] when empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


class AnnotationDocument:
    """The objects of one image, with undo/redo over every change."""

    def __init__(self, name: str, size: Tuple[int, int], file_name: str = "") -> None:
        self.name = name
        self.size = size
        self.file_name = file_name or f"{name}.jpg"
        self.objects: List[AnnotatedObject] = []
        self.extra_image_fields: Dict[str, Any] = {}
        self._next_id = 0
        self._undo: List[Tuple[List[AnnotatedObject], int]] = []
        self._redo: List[Tuple[List[AnnotatedObject], int]] = []
        self.dirty = False

    # ---- history ------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Call before a change: the state before it becomes one undo step."""
        self._undo.append((copy.deepcopy(self.objects), self._next_id))
        del self._undo[:-UNDO_DEPTH]
        self._redo.clear()
        self.dirty = True

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append((self.objects, self._next_id))
        self.objects, self._next_id = self._undo.pop()
        self.dirty = True
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append((self.objects, self._next_id))
        self.objects, self._next_id = self._redo.pop()
        self.dirty = True
        return True

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # ---- objects ------------------------------------------------------------------------
    def get(self, object_id: int) -> AnnotatedObject:
        for o in self.objects:
            if o.object_id == object_id:
                return o
        raise KeyError(object_id)

    def add(self, mask: np.ndarray, **fields: Any) -> AnnotatedObject:
        """A new object (call checkpoint() first)."""
        obj = AnnotatedObject(self._next_id, mask.astype(bool), **fields)
        self._next_id += 1
        self.objects.append(obj)
        return obj

    def remove(self, object_id: int) -> None:
        self.checkpoint()
        self.objects = [o for o in self.objects if o.object_id != object_id]

    def apply_stroke(self, object_id: Optional[int], points: Sequence[Tuple[float, float]], radius: float,
                     erase: bool) -> Optional[AnnotatedObject]:
        """Brush (add) or eraser (remove) along points on one object's mask. A brush stroke with no
        object starts a new one; an eraser stroke needs an object."""
        painted = stroke_mask(self.size, points, radius)
        if object_id is None:
            if erase:
                return None
            self.checkpoint()
            return self.add(painted, source="brush", edited=True)
        obj = self.get(object_id)  # KeyError before any change
        self.checkpoint()
        obj.mask = obj.mask & ~painted if erase else obj.mask | painted
        obj.edited = True
        obj.low_res = None  # the model's logits no longer describe the mask
        obj.candidates = obj.candidate_ious = obj.candidate_low_res = None
        return obj

    # ---- files --------------------------------------------------------------------------
    def to_record(self) -> Dict[str, Any]:
        """The SA-1B / data-engine JSON: {"image": {...}, "annotations": [...]}."""
        h, w = self.size
        anns = []
        for o in self.objects:
            rec = dict(o.record)
            rle = encode_rle(mask_to_rle(o.mask))
            rec.update({"id": o.object_id, "segmentation": rle, "area": int(o.mask.sum()), "bbox": mask_bbox(o.mask),
                        "label": o.label, "source": o.source})
            if not o.record or o.edited:
                rec.update({"predicted_iou": float(o.iou), "stability_score": float(o.stability),
                            "point_coords": [list(p) for p in o.points], "point_labels": list(o.labels),
                            "crop_box": [0, 0, w, h]})
                if o.box is not None:
                    rec["box_prompt"] = [float(v) for v in o.box]
            if o.edited:
                rec["edited"] = True
            if o.review:
                rec["review"] = o.review
            else:
                rec.pop("review", None)
            anns.append(rec)
        image = dict(self.extra_image_fields)
        image.update({"image_id": self.name, "file_name": self.file_name, "height": h, "width": w})
        return {"image": image, "annotations": anns}

    def save(self, folder: str) -> str:
        """Write <folder>/<name>.json atomically; returns its path."""
        path = os.path.join(folder, f"{self.name}.json")
        _atomic_write(path, json.dumps(self.to_record()).encode())
        self.dirty = False
        return path

    @classmethod
    def from_record(cls, name: str, record: Dict[str, Any]) -> "AnnotationDocument":
        img = record.get("image", {})
        h, w = int(img["height"]), int(img["width"])
        doc = cls(name, (h, w), img.get("file_name", f"{name}.jpg"))
        doc.extra_image_fields = {k: v for k, v in img.items() if k not in ("image_id", "file_name", "height", "width")}
        for rec in record.get("annotations", []):
            mask = rle_to_mask(rec["segmentation"])
            if mask.shape != (h, w):
                raise ValueError(f"{name}: annotation {rec.get('id')} is {mask.shape}, the image is {(h, w)}")
            pts = [tuple(map(float, p)) for p in rec.get("point_coords", []) or []]
            obj = AnnotatedObject(
                int(rec.get("id", doc._next_id)), mask, label=str(rec.get("label", "")), points=pts,
                labels=[int(v) for v in rec.get("point_labels", [1] * len(pts))],
                box=tuple(rec["box_prompt"]) if rec.get("box_prompt") else None,
                iou=float(rec.get("predicted_iou", 0.0)), stability=float(rec.get("stability_score", 0.0)),
                review=rec.get("review", "") if rec.get("review") in REVIEW_STATES else "",
                source=str(rec.get("source", "")), edited=bool(rec.get("edited", False)),
                record={k: v for k, v in rec.items() if k not in ("segmentation", "area", "bbox")})
            doc.objects.append(obj)
            doc._next_id = max(doc._next_id, obj.object_id + 1)
        return doc

    @classmethod
    def load(cls, path: str) -> "AnnotationDocument":
        with open(path) as f:
            record = json.load(f)
        return cls.from_record(os.path.splitext(os.path.basename(path))[0], record)


def coco_from_records(records: Sequence[Dict[str, Any]], include_rejected: bool = False) -> Dict[str, Any]:
    """SA-1B records of several images -> one COCO instances file (categories from labels;
    objects without a label go to category "object"). Rejected objects are left out."""
    categories: Dict[str, int] = {}
    images, annotations = [], []
    for i, rec in enumerate(records):
        img = rec["image"]
        images.append({"id": i + 1, "file_name": img["file_name"], "height": img["height"], "width": img["width"]})
        for a in rec["annotations"]:
            if a.get("review") == "rejected" and not include_rejected:
                continue
            cat = categories.setdefault(a.get("label") or "object", len(categories) + 1)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                                "segmentation": a["segmentation"], "area": area_from_rle(a["segmentation"]),
                                "bbox": a["bbox"], "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": v, "name": k} for k, v in categories.items()]}
