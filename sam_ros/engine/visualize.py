"""Drawing masks over images (overlays for RViz/rqt, the demo and the dataset viewer)."""
import zlib
from typing import Optional, Sequence

import cv2
import numpy as np

_PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
], dtype=np.uint8)


def color_for(key) -> np.ndarray:
    """A stable colour per target id (or index)."""
    idx = key if isinstance(key, (int, np.integer)) else zlib.crc32(str(key).encode())
    return _PALETTE[int(idx) % len(_PALETTE)]


def draw_masks(image: np.ndarray, masks: Sequence[np.ndarray], labels: Optional[Sequence[str]] = None,
               keys: Optional[Sequence] = None, alpha: float = 0.5,
               offsets: Optional[Sequence[tuple]] = None) -> np.ndarray:
    """RGB image with each mask tinted in its colour, outlined, and labelled at its top-left.

    masks: full-size H x W bool masks, or crops placed at `offsets` (x, y).
    """
    out = image.copy()
    for i, m in enumerate(masks):
        if m is None or not np.any(m):
            continue
        color = color_for(keys[i] if keys is not None else i)
        x0, y0 = offsets[i] if offsets is not None else (0, 0)
        # Work on the mask's bounding box only (an overlay per camera frame must stay cheap).
        bx, by, bw, bh = cv2.boundingRect(np.ascontiguousarray(m, dtype=np.uint8))
        m = np.ascontiguousarray(m[by:by + bh, bx:bx + bw], dtype=bool)
        x0, y0 = x0 + bx, y0 + by
        region = out[y0 : y0 + bh, x0 : x0 + bw]
        m = m[: region.shape[0], : region.shape[1]]
        tinted = (region * (1 - alpha) + color * alpha).astype(np.uint8)
        region[m] = tinted[m]
        contours, _ = cv2.findContours(m.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(region, contours, -1, tuple(int(c) for c in color), 2)
        if labels is not None and labels[i]:
            org = (int(x0), int(max(12, y0 - 4)))
            cv2.putText(out, labels[i], org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, labels[i], org, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out
