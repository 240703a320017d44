"""Training data: images with instance masks.

Two sources share one interface (``len``, ``sample(i) -> Sample``):
- :class:`ProceduralDataset` generates scenes on the fly (deterministic from the index);
- :class:`MaskJsonDataset` reads a COCO instances file or an SA-1B style folder (one JSON per
  image) with RLE (or polygon) masks; this is what a user fine-tunes on.
"""
import json
import os
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np

from ..data import scenes
from ..engine.mask_utils import rle_to_mask


@dataclass
class Sample:
    image: np.ndarray   # H x W x 3 uint8 RGB
    masks: np.ndarray   # K x H x W bool, candidate targets
    level: Optional[np.ndarray] = None  # K (0 whole / 1 part / 2 subpart) where known


class ProceduralDataset:
    """Procedural scenes whose longest side is `long_side` (aspect varies with the index).

    Training indices map to seeds outside the held-out evaluation seeds.
    """

    ASPECTS = ((3, 4), (4, 3), (1, 1), (9, 16), (16, 9))

    def __init__(self, long_side: int, length: int = 10 ** 9, seeds: Optional[Sequence[int]] = None,
                 min_area_frac: float = 0.002) -> None:
        self.long_side = long_side
        self.seeds = seeds
        self.length = len(seeds) if seeds is not None else length
        self.min_area_frac = min_area_frac

    def __len__(self) -> int:
        return self.length

    def seed(self, index: int) -> int:
        return self.seeds[index] if self.seeds is not None else scenes.train_seed(index)

    def size(self, index: int):
        a, b = self.ASPECTS[zlib.crc32(str(index).encode()) % len(self.ASPECTS)]
        h = self.long_side if a >= b else int(round(self.long_side * a / b))
        w = self.long_side if b >= a else int(round(self.long_side * b / a))
        return h, w

    def sample(self, index: int) -> Sample:
        h, w = self.size(index)
        scene = scenes.generate_scene(self.seed(index), height=h, width=w)
        areas = scene.masks.reshape(len(scene.masks), -1).sum(1)
        keep = areas >= self.min_area_frac * h * w
        return Sample(scene.image, scene.masks[keep], scene.level[keep])


class MaskJsonDataset:
    """Images + instance masks from COCO instances JSON or an SA-1B style folder.

    Args:
        path: a COCO instances ``.json`` (with ``images`` and ``annotations``), or a folder of
            ``<name>.jpg`` + ``<name>.json`` pairs in the SA-1B layout (``annotations`` with RLE
            ``segmentation``).
        image_root: folder of the images of a COCO file (default: the JSON's folder).
        split / holdout: "train" or "holdout"; every image whose id hashes into the last
            `holdout` fraction goes to the held-out part (stable across runs).
    """

    def __init__(self, path: str, image_root: Optional[str] = None, split: str = "all",
                 holdout: float = 0.2, min_area: int = 16) -> None:
        self.min_area = min_area
        self.records: List[dict] = []
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if not name.endswith(".json"):
                    continue
                with open(os.path.join(path, name)) as f:
                    data = json.load(f)
                info = data.get("image", {})
                file_name = info.get("file_name") or name[:-5] + ".jpg"
                self.records.append({"id": info.get("image_id", name), "file": os.path.join(path, file_name),
                                     "height": info.get("height"), "width": info.get("width"),
                                     "anns": data.get("annotations", [])})
        else:
            with open(path) as f:
                data = json.load(f)
            root = image_root or os.path.dirname(os.path.abspath(path))
            anns = {}
            for a in data.get("annotations", []):
                anns.setdefault(a["image_id"], []).append(a)
            for im in data.get("images", []):
                self.records.append({"id": im["id"], "file": os.path.join(root, im["file_name"]),
                                     "height": im["height"], "width": im["width"], "anns": anns.get(im["id"], [])})
        if split != "all":
            def held(rec) -> bool:
                return (zlib.crc32(str(rec["id"]).encode()) % 1000) < holdout * 1000
            self.records = [r for r in self.records if held(r) == (split == "holdout")]
        self.records = [r for r in self.records if r["anns"]]

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int) -> Sample:
        rec = self.records[index % len(self.records)]
        image = cv2.imread(rec["file"], cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {rec['file']}")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        masks = [m for m in (decode_segmentation(a["segmentation"], h, w) for a in rec["anns"]) if m.sum() >= self.min_area]
        return Sample(image, np.stack(masks) if masks else np.zeros((0, h, w), bool))


def decode_segmentation(seg, h: int, w: int) -> np.ndarray:
    """COCO segmentation (RLE dict, compressed or not, or polygon list) -> H x W bool."""
    if isinstance(seg, dict):
        return rle_to_mask({"size": seg.get("size", [h, w]), "counts": seg["counts"]})
    mask = np.zeros((h, w), np.uint8)
    for poly in seg:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)
