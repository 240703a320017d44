"""Pre- and post-processing between camera images and the model's square input frame.

Pure functions (no model state): resize the longest side to the model's input size, map prompt
coordinates into that frame, and bring low-resolution mask logits back to the original image.

Two geometries of the mask logits, selected by ``img_size`` in the post-processing functions:
SAM's (an int: bilinear upscale to img_size x img_size, crop the padding to input_size, bilinear
resize to the original size) and SAM 2's (``None``: one bilinear resize of the L x L logits
straight to the original size, as SAM 2 resizes the image to the square input without padding).
"""
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def get_preprocess_shape(old_h: int, old_w: int, long_side: int) -> Tuple[int, int]:
    """Size (h, w) of an old_h x old_w image resized so that its longest side is long_side."""
    scale = long_side * 1.0 / max(old_h, old_w)
    # At least one pixel: an extreme aspect ratio (e.g. a 1 x 3000 line scan) would round to 0.
    return max(1, int(old_h * scale + 0.5)), max(1, int(old_w * scale + 0.5))


# Resize methods for the model's input. "reference" is what Meta's segment-anything does
# (ResizeLongestSide.apply_image: torchvision's to_pil_image, then resize with PIL's bilinear
# filter, which widens its support when shrinking), pixel for pixel; official checkpoints were
# trained and evaluated on it. "opencv" (bilinear up, area down) is faster and what our embedded
# model was trained with. SamPredictor picks by model (see default_resize_method).
RESIZE_METHODS = ("opencv", "reference")
OFFICIAL_VARIANTS = ("vit_b", "vit_l", "vit_h", "vit_t")


def resize_image(image: np.ndarray, size: Tuple[int, int], method: str = "opencv") -> np.ndarray:
    """Resize an H x W x C uint8 image to size (h, w) with one of RESIZE_METHODS."""
    h, w = size
    if (h, w) == image.shape[:2]:
        return image
    if method == "reference":
        return _resize_pil_bilinear(image, (h, w))
    if method != "opencv":
        raise ValueError(f"resize method must be one of {', '.join(RESIZE_METHODS)}, not {method!r}")
    shrinking = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _resize_pil_bilinear(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """PIL's bilinear resize of an H x W x 3 (or H x W) uint8 image to size (h, w)."""
    from PIL import Image  # imported on first use: only official checkpoints need it

    h, w = size
    return np.array(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.Resampling.BILINEAR))


def default_resize_method(config: Optional[object]) -> str:
    """"reference" for a model of an official architecture (SAM ViT-B/L/H, MobileSAM's TinyViT at
    1024 px), "opencv" for anything else (our embedded model, custom sizes)."""
    from ..model.build import MODEL_CONFIGS  # engine -> model: the registry of named sizes

    official = any(config == MODEL_CONFIGS[name] for name in OFFICIAL_VARIANTS)
    return "reference" if official else "opencv"


def resize_longest_side(image: np.ndarray, long_side: int, method: str = "opencv") -> np.ndarray:
    return resize_image(image, get_preprocess_shape(image.shape[0], image.shape[1], long_side), method)


def resize_longest_side_torch(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """H x W x 3 uint8 tensor (any device) -> 1 x 3 x h x w float32 with the longest side long_side
    (bilinear with antialiasing, on the tensor's device)."""
    x = image.permute(2, 0, 1).unsqueeze(0).float()
    size = get_preprocess_shape(image.shape[0], image.shape[1], long_side)
    if tuple(size) == tuple(image.shape[:2]):
        return x
    return F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 255)


def image_to_tensor(image: np.ndarray, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float32 (0-255) on device."""
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    return t.permute(2, 0, 1).unsqueeze(0).float()


def apply_coords(coords: np.ndarray, original_size: Tuple[int, int], long_side: int) -> np.ndarray:
    """Map ... x 2 (x, y) pixel coordinates of the original image into the resized frame."""
    old_h, old_w = original_size
    new_h, new_w = get_preprocess_shape(old_h, old_w, long_side)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= new_w / old_w
    out[..., 1] *= new_h / old_h
    return out


def apply_boxes(boxes: np.ndarray, original_size: Tuple[int, int], long_side: int) -> np.ndarray:
    """Map B x 4 (x0, y0, x1, y1) boxes of the original image into the resized frame."""
    return apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size, long_side).reshape(-1, 4)


def _interp_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """out_size x in_size matrix equal to 1-D bilinear interpolation (align_corners=False)."""
    eye = torch.eye(in_size, dtype=torch.float64)[None, None]  # rows are the input positions
    return F.interpolate(eye, size=(out_size, in_size), mode="bilinear", align_corners=False)[0, 0]


@lru_cache(maxsize=64)
def _upscale_taps(low_res: int, img_size: Optional[int], input_len: int, out_len: int
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sparse form of the 1-D map low_res -> img_size (bilinear), crop to input_len, -> out_len
    (img_size None: low_res -> out_len directly, SAM 2).

    Returns (index, weight), both out_len x K: output i = sum_k weight[i, k] * input[index[i, k]],
    summed in k order. Weights are >= 0 and sum to 1 per output (both steps are bilinear
    interpolations); a row with fewer than K non-zero weights repeats its first index for the
    zero-weight taps, so index[i].min() .. index[i].max() is the support of output i.
    """
    if img_size is None:
        full = _interp_matrix(low_res, out_len).float().double()  # out_len x low_res
    else:
        up = _interp_matrix(low_res, img_size)[:input_len]  # input_len x low_res
        down = _interp_matrix(input_len, out_len)           # out_len x input_len
        full = (down @ up).float().double()                 # out_len x low_res, a few non-zeros per row
    k = int((full != 0).sum(1).max())
    weight, index = full.abs().topk(k, dim=1)
    weight = torch.gather(full, 1, index)
    index = torch.where(weight != 0, index, index[:, :1])
    return index, weight.float()


@lru_cache(maxsize=64)
def _tap_support(low_res: int, img_size: Optional[int], input_len: int, out_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """(first, last): out_len int arrays, the lowest and highest low-res index output i reads.
    Both are non-decreasing in i (interpolation preserves order)."""
    index, _ = _upscale_taps(low_res, img_size, input_len, out_len)
    first, last = index.min(1).values.numpy(), index.max(1).values.numpy()
    assert (np.diff(first) >= 0).all() and (np.diff(last) >= 0).all()
    return first, last


def _taps_1d(low: int, img_size: Optional[int], input_size: Tuple[int, int], original_size: Tuple[int, int], axis: int):
    return _upscale_taps(low, img_size, input_size[axis], original_size[axis])


def postprocess_region(
    low_res: torch.Tensor, region: Sequence[int], input_size: Tuple[int, int], original_size: Tuple[int, int],
    img_size: Optional[int],
) -> torch.Tensor:
    """Low-res logits ... x L x L -> the logits of region (x0, y0, x1, y1; pixels x0 <= x < x1,
    y0 <= y < y1 of the original image), ... x (y1 - y0) x (x1 - x0).

    Bit for bit the same numbers as ``postprocess_masks(...)[..., y0:y1, x0:x1]``: every output
    pixel is computed by the same float32 operations in the same order (the full frame is this
    function with the whole image as region), only the pixels outside the region are skipped.
    """
    x0, y0, x1, y1 = (int(v) for v in region)
    if not (0 <= x0 <= x1 <= original_size[1] and 0 <= y0 <= y1 <= original_size[0]):
        raise ValueError(f"region {tuple(region)} is not inside the {original_size[1]}x{original_size[0]} image")
    low = low_res.shape[-1]
    dev = low_res.device
    idx_h, w_h = _taps_1d(low, img_size, input_size, original_size, 0)
    idx_w, w_w = _taps_1d(low, img_size, input_size, original_size, 1)
    idx_h, w_h, idx_w, w_w = idx_h[y0:y1], w_h[y0:y1], idx_w[x0:x1], w_w[x0:x1]
    if y1 == y0 or x1 == x0:
        return low_res.new_zeros((*low_res.shape[:-2], y1 - y0, x1 - x0), dtype=torch.float32)
    # Only the low-res rows and columns these output pixels read.
    r0, r1 = int(idx_h.min()), int(idx_h.max()) + 1
    c0, c1 = int(idx_w.min()), int(idx_w.max()) + 1
    idx_h, w_h, idx_w, w_w = (idx_h - r0).to(dev), w_h.to(dev), (idx_w - c0).to(dev), w_w.to(dev)
    # Columns first, on the few low-res rows (cheap; transposed so that every tap gathers whole
    # contiguous rows), then rows: each output row is a few whole rows of that, weighted. Each
    # tap is a product and then a sum, never a fused multiply-add, so a pixel's rounding does
    # not depend on the region or on which vector lane computes it.
    xt = low_res[..., r0:r1, c0:c1].float().transpose(-1, -2).contiguous()
    cols = _weighted_rows(xt, idx_w, w_w).transpose(-1, -2).contiguous()
    return _weighted_rows(cols, idx_h, w_h)


def _weighted_rows(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """... x R x C, index / weight N x K -> ... x N x C: row i = sum_k weight[i, k] * x[index[i, k]]."""
    out = x.index_select(-2, index[:, 0]).mul_(weight[:, 0, None])
    term = torch.empty_like(out) if index.shape[1] > 1 else None
    for k in range(1, index.shape[1]):
        out.add_(torch.index_select(x, -2, index[:, k], out=term).mul_(weight[:, k, None]))
    return out


def postprocess_masks(
    low_res: torch.Tensor, input_size: Tuple[int, int], original_size: Tuple[int, int], img_size: Optional[int]
) -> torch.Tensor:
    """Low-res logits B x M x L x L -> logits at the original size, B x M x H x W.

    Equal (to float rounding) to SAM's reference: bilinear upscale to img_size x img_size, crop
    the padding to input_size, bilinear resize to original_size. Both steps are separable linear
    maps, so their composition is applied directly (a few taps per output column, then a few
    taps per output row), never materialising the 1024 x 1024 intermediate. img_size None:
    SAM 2's single bilinear resize L x L -> original_size (input_size unused).
    """
    h, w = original_size
    return postprocess_region(low_res, (0, 0, w, h), input_size, original_size, img_size)


def mask_regions(
    low_res: torch.Tensor, threshold: float, input_size: Tuple[int, int], original_size: Tuple[int, int],
    img_size: Optional[int],
) -> np.ndarray:
    """Where in the original image each mask's postprocessed logits can exceed threshold.

    low_res: N x L x L -> N x 4 int64 regions (x0, y0, x1, y1), pixels x0 <= x < x1, y0 <= y < y1;
    an empty region (x1 == x0, y1 == y0) where no pixel can. Every pixel of
    ``postprocess_masks`` above threshold lies inside its mask's region.

    Why: each output pixel is a combination of low-res pixels with weights >= 0 summing to 1, so
    it can exceed threshold only if one of the low-res pixels it reads does. The low-res pixels
    above threshold, less a margin that covers float32 rounding of the weights and sums, span
    rows a0..a1 and columns b0..b1; the output rows that read one of rows a0..a1 (and columns
    likewise) follow from the taps. Non-finite logits: the whole image.
    """
    n, low = low_res.shape[0], low_res.shape[-1]
    out = np.zeros((n, 4), np.int64)
    if n == 0:
        return out
    x = low_res.float()
    peak = float(x.abs().amax()) if x.numel() else 0.0
    if not np.isfinite(peak):
        out[:] = (0, 0, original_size[1], original_size[0])
        finite = torch.isfinite(x).flatten(1).all(1).cpu().numpy()
        if finite.any():
            sub = np.flatnonzero(finite)
            out[sub] = mask_regions(low_res[torch.as_tensor(sub, device=low_res.device)], threshold,
                                    input_size, original_size, img_size)
        return out
    # Relative rounding of a pixel is a few float32 ulps of the largest |logit| it reads (weights
    # rounded to float32 and at most ~10 products and sums): 1e-4 of it is a wide margin.
    above = x > threshold - 1e-4 * (1.0 + abs(threshold) + peak)
    rows, cols = above.any(-1).cpu().numpy(), above.any(-2).cpu().numpy()  # N x L each
    has = rows.any(1)
    a0, a1 = rows.argmax(1), low - 1 - rows[:, ::-1].argmax(1)
    b0, b1 = cols.argmax(1), low - 1 - cols[:, ::-1].argmax(1)
    fh, lh = _tap_support(low, img_size, input_size[0], original_size[0])
    fw, lw = _tap_support(low, img_size, input_size[1], original_size[1])
    for i in np.flatnonzero(has):
        # Output i reads low-res first[i]..last[i]: it meets a0..a1 when last[i] >= a0 and first[i] <= a1.
        y0, y1 = np.searchsorted(lh, a0[i], "left"), np.searchsorted(fh, a1[i], "right")
        x0, x1 = np.searchsorted(lw, b0[i], "left"), np.searchsorted(fw, b1[i], "right")
        if y1 > y0 and x1 > x0:
            out[i] = (x0, y0, x1, y1)
    return out
