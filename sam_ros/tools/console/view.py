"""What the page shows: the image with every object's mask tinted in its colour, outlined and
labelled, the selected one outlined in white; encoded once per change as JPEG, WebP or PNG."""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ...engine.visualize import draw_masks

FORMATS = {"jpeg": (".jpg", "image/jpeg", cv2.IMWRITE_JPEG_QUALITY, 85),
           "webp": (".webp", "image/webp", cv2.IMWRITE_WEBP_QUALITY, 80),
           "png": (".png", "image/png", cv2.IMWRITE_PNG_COMPRESSION, 1)}


@dataclass
class DrawnMask:
    key: str                     # colour key (target id / object id)
    mask: np.ndarray             # h x w bool, placed at offset
    offset: Tuple[int, int] = (0, 0)
    label: str = ""


def compose(image: np.ndarray, items: Sequence[DrawnMask], selected: Optional[str] = None,
            alpha: float = 0.5) -> np.ndarray:
    """H x W x 3 RGB -> the same with the masks drawn (selected outlined in white)."""
    out = draw_masks(image, [d.mask for d in items], [d.label for d in items], keys=[d.key for d in items],
                     alpha=alpha, offsets=[d.offset for d in items])
    for d in items:
        if d.key == selected and d.mask.any():
            contours, _ = cv2.findContours(d.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                           offset=tuple(int(v) for v in d.offset))
            cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def encode(rgb: np.ndarray, fmt: str) -> Tuple[bytes, str]:
    """RGB image -> (encoded bytes, MIME type)."""
    ext, mime, flag, quality = FORMATS[fmt]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [flag, quality])
    if not ok:
        raise RuntimeError(f"could not encode a {fmt} frame")
    return buf.tobytes(), mime
