"""What a target looks like, to tell it from other objects and to find it again (ROS-free).

Two model-agnostic cues, both computed on the target's mask:
- the image embedding pooled under the mask (a PerSAM-style location prior: the cosine similarity
  of this vector with every cell of a new frame's embedding says where the target may be);
- a hue-saturation histogram of its pixels (cheap, and independent of the embedding's coarse grid).
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch

from ..predictor import ImageEmbedding

HIST_BINS = (18, 8)   # hue x saturation


def embedding_grid_mask(mask: np.ndarray, embedding: ImageEmbedding) -> np.ndarray:
    """The H x W mask as per-cell coverage (0..1) on the embedding grid (h x w float32). The
    grid covers the resized, padded input: the image occupies its top-left `input_size`."""
    gh, gw = embedding.features.shape[-2:]
    ih, iw = embedding.input_size
    pad = max(ih, iw)  # the model's input side (longest side resized to it)
    ch, cw = ih * gh / pad, iw * gw / pad   # grid cells covered by the image
    small = cv2.resize(mask.astype(np.float32), (max(1, round(cw)), max(1, round(ch))), interpolation=cv2.INTER_AREA)
    out = np.zeros((gh, gw), np.float32)
    out[:small.shape[0], :small.shape[1]] = small[:gh, :gw]
    return out


def _centred_cells(embedding: ImageEmbedding) -> "torch.Tensor":
    """C x h x w embedding cells minus their mean over the image: what is shared by the whole
    frame says little about one object."""
    feats = embedding.features[0].float().cpu()
    weights = torch.from_numpy(embedding_grid_mask(np.ones(embedding.original_size, bool), embedding))
    mean = (feats * weights).sum((1, 2), keepdim=True) / weights.sum().clamp_min(1e-6)
    return feats - mean


def pooled_feature(embedding: ImageEmbedding, mask: np.ndarray) -> Optional[np.ndarray]:
    """Unit-length C-vector: the (image-mean centred) embedding averaged under the mask (None
    for an empty mask)."""
    weights = embedding_grid_mask(mask, embedding)
    total = float(weights.sum())
    if total <= 1e-6:
        return None
    vec = ((_centred_cells(embedding) * torch.from_numpy(weights)).sum((1, 2)) / total).numpy()
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else None


def similarity_map(embedding: ImageEmbedding, feature: np.ndarray) -> np.ndarray:
    """Cosine similarity of `feature` with every (centred) cell of the embedding inside the
    image: gh x gw float32 (cells of the padding are -1)."""
    feats = _centred_cells(embedding)
    c, gh, gw = feats.shape
    f = feats.reshape(c, -1)
    f = f / f.norm(dim=0, keepdim=True).clamp_min(1e-6)
    sim = (torch.from_numpy(feature.astype(np.float32)) @ f).reshape(gh, gw).numpy()
    ih, iw = embedding.input_size
    pad = max(ih, iw)
    valid_h, valid_w = int(np.ceil(ih * gh / pad)), int(np.ceil(iw * gw / pad))
    out = np.full((gh, gw), -1.0, np.float32)
    out[:valid_h, :valid_w] = sim[:valid_h, :valid_w]
    return out


def cell_pixels(embedding: ImageEmbedding) -> float:
    """Original-image pixels per embedding cell (the same on both axes)."""
    ih, iw = embedding.input_size
    return max(ih, iw) / embedding.features.shape[-2] * (embedding.original_size[1] / iw)


def candidate_points(sim: np.ndarray, embedding: ImageEmbedding, threshold: float,
                     max_candidates: int = 3,
                     window: Optional[Tuple[float, float, float, float]] = None,
                     score: Optional[np.ndarray] = None) -> List[Tuple[float, float, float]]:
    """Local maxima of `score` (default: the similarity map) over the cells whose similarity is
    at least `threshold`, best first, as (x, y, score) in original-image pixels (cell centres);
    only those inside `window` (x0, y0, x1, y1 in original pixels) when given."""
    H, W = embedding.original_size
    step = cell_pixels(embedding)
    score = sim if score is None else score
    masked = np.where(sim >= threshold, score, -np.inf).astype(np.float32)
    keep = (masked >= cv2.dilate(masked, np.ones((3, 3), np.uint8))) & np.isfinite(masked)
    if window is not None:
        x0, y0, x1, y1 = (int(np.floor(v / step)) for v in window)
        inside = np.zeros_like(keep)
        inside[max(0, y0):max(0, y1 + 1), max(0, x0):max(0, x1 + 1)] = True
        keep &= inside
    ys, xs = np.nonzero(keep)
    order = np.argsort(-score[ys, xs])[:max_candidates]
    out = []
    for i in order:
        x = min(W - 1.0, (xs[i] + 0.5) * step)
        y = min(H - 1.0, (ys[i] + 0.5) * step)
        out.append((float(x), float(y), float(score[ys[i], xs[i]])))
    return out


def colour_histogram(rgb: np.ndarray, mask: np.ndarray, bbox: Tuple[int, int, int, int]) -> Optional[np.ndarray]:
    """Normalised hue-saturation histogram of the masked pixels (None for an empty mask)."""
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return None
    roi = np.ascontiguousarray(rgb[y:y + h, x:x + w])
    m = np.ascontiguousarray(mask[y:y + h, x:x + w], dtype=np.uint8)
    if not m.any():
        return None
    hsv = cv2.cvtColor(roi, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], m, list(HIST_BINS), [0, 180, 0, 256])
    s = float(hist.sum())
    return (hist / s).astype(np.float32) if s > 0 else None


def cell_histograms(rgb: np.ndarray, embedding: ImageEmbedding) -> np.ndarray:
    """The hue-saturation histogram (as `colour_histogram`) of every embedding cell's pixels:
    gh x gw x bins float32, each cell's normalised (all zeros for cells of the padding)."""
    gh, gw = embedding.features.shape[-2:]
    step = cell_pixels(embedding)
    stride = max(1, int(step // 8))   # cells of 16 px and more: every other pixel will do
    rgb, step = rgb[::stride, ::stride], step / stride
    H, W = rgb.shape[:2]
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    nh, ns = HIST_BINS
    bins = (hsv[..., 0].astype(np.int64) * nh // 180).clip(0, nh - 1) * ns + (hsv[..., 1].astype(np.int64) * ns // 256)
    cy = np.minimum(gh - 1, (np.arange(H) / step).astype(np.int64))
    cx = np.minimum(gw - 1, (np.arange(W) / step).astype(np.int64))
    index = (cy[:, None] * gw + cx[None, :]) * (nh * ns) + bins
    counts = np.bincount(index.ravel(), minlength=gh * gw * nh * ns).astype(np.float32).reshape(gh, gw, nh * ns)
    return counts / np.maximum(counts.sum(-1, keepdims=True), 1.0)


def cell_colour_similarity(cells: np.ndarray, reference: np.ndarray, concentration: float = 3.0) -> np.ndarray:
    """`histogram_similarity` of every cell of `cell_histograms` to `reference`: gh x gw."""
    return np.minimum(cells, concentration * reference.reshape(1, 1, -1)).sum(-1)


def histogram_similarity(reference: Optional[np.ndarray], observed: Optional[np.ndarray],
                         concentration: float = 3.0) -> float:
    """How much of the observed colours the reference holds (0..1): sum over bins of
    min(observed, concentration x reference). A partial view of the object (its colours in other
    proportions, up to `concentration` times more of one) scores near 1, another object near 0."""
    if reference is None or observed is None:
        return 0.0
    return float(np.minimum(observed, concentration * reference).sum())


@dataclass
class Appearance:
    """A target's appearance model, updated slowly while it is tracked confidently."""
    feature: Optional[np.ndarray] = None     # unit C-vector
    histogram: Optional[np.ndarray] = None
    area: float = 0.0                        # reference visible area, pixels

    def update(self, feature: Optional[np.ndarray], histogram: Optional[np.ndarray], area: float,
               rate: float) -> None:
        """Blend in a new observation (rate 1 replaces, 0 keeps)."""
        if feature is not None:
            f = feature if self.feature is None else (1 - rate) * self.feature + rate * feature
            self.feature = f / max(1e-6, float(np.linalg.norm(f)))
        if histogram is not None:
            self.histogram = histogram if self.histogram is None else (1 - rate) * self.histogram + rate * histogram
        self.area = area if self.area <= 0 else (1 - rate) * self.area + rate * area
