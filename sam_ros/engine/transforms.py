"""Pre- and post-processing between camera images and the model's square input frame.

Pure functions (no model state): resize the longest side to the model's input size, map prompt
coordinates into that frame, and bring low-resolution mask logits back to the original image.
"""
from functools import lru_cache
from typing import Optional, Tuple

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
def _upscale_taps(low_res: int, img_size: int, input_len: int, out_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sparse form of the 1-D map low_res -> img_size (bilinear), crop to input_len, -> out_len.

    Returns (index, weight), both out_len x K: output i = sum_k weight[i, k] * input[index[i, k]].
    """
    up = _interp_matrix(low_res, img_size)[:input_len]  # input_len x low_res
    down = _interp_matrix(input_len, out_len)           # out_len x input_len
    full = down @ up                                    # out_len x low_res, a few non-zeros per row
    k = int((full != 0).sum(1).max())
    weight, index = full.abs().topk(k, dim=1)
    weight = torch.gather(full, 1, index)
    return index, weight.float()


@lru_cache(maxsize=64)
def _upscale_matrix(low_res: int, img_size: int, input_len: int, out_len: int) -> torch.Tensor:
    """The same 1-D map as _upscale_taps as a dense low_res x out_len float32 matrix (x @ M)."""
    index, weight = _upscale_taps(low_res, img_size, input_len, out_len)
    m = torch.zeros(out_len, low_res, dtype=torch.float64)
    m.scatter_add_(1, index, weight.double())
    return m.t().float().contiguous()


def postprocess_masks(
    low_res: torch.Tensor, input_size: Tuple[int, int], original_size: Tuple[int, int], img_size: int
) -> torch.Tensor:
    """Low-res logits B x M x L x L -> logits at the original size, B x M x H x W.

    Equal (to float rounding) to SAM's reference: bilinear upscale to img_size x img_size, crop
    the padding to input_size, bilinear resize to original_size. Both steps are separable linear
    maps, so their composition is applied directly (a matrix product for the columns, a few taps
    per output row for the rows), never materialising the 1024 x 1024 intermediate.
    """
    low = low_res.shape[-1]
    idx_h, w_h = _upscale_taps(low, img_size, input_size[0], original_size[0])
    x = low_res.float()
    dev = x.device
    # Columns first, on the low-res rows: one matrix product with the (sparse-valued) column map.
    x = x @ _upscale_matrix(low, img_size, input_size[1], original_size[1]).to(dev)
    # Then rows: each output row is a few whole (contiguous) input rows, weighted.
    idx_h, w_h = idx_h.to(dev), w_h.to(dev)
    out = None
    for k in range(idx_h.shape[1]):
        term = x.index_select(-2, idx_h[:, k]) * w_h[:, k, None]
        out = term if out is None else out.add_(term)
    return out
