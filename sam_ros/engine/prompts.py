"""The one prompt representation that every input (ROS messages, clicks, detector boxes, the CLI,
the training loop) turns into before it reaches the predictor, and the checks applied to it."""
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np


class InputError(ValueError):
    """An image or prompt that cannot be used, with a message saying what is wrong."""


@dataclass
class Prompt:
    """Prompts for one object, in pixel coordinates of the original image.

    points: N x 2 (x, y); labels: N (1 = foreground, 0 = background); box: (x0, y0, x1, y1);
    mask_input: 1 x L x L low-res logits from an earlier prediction (L = 4 x embedding size);
    multimask: return the 3 ambiguity masks instead of one.
    """
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    box: Optional[np.ndarray] = None
    mask_input: Optional[np.ndarray] = None
    multimask: bool = True

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float64).reshape(-1)

    @property
    def signature(self) -> Tuple[int, bool, bool, bool]:
        """Prompts with equal signatures decode together in one batch."""
        return (len(self.points), self.box is not None, self.mask_input is not None, self.multimask)


def validate_image(image: np.ndarray) -> None:
    """Raise InputError unless image is a non-empty H x W x 3 uint8 array."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8 (0-255), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be H x W x 3 (RGB), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image is empty (shape {image.shape})")


def validate_points(points: np.ndarray, labels: np.ndarray, image_size: Tuple[int, int]) -> None:
    """Points must be finite, inside the image (0 <= x <= W, 0 <= y <= H), labels 0 or 1."""
    h, w = image_size
    if points.ndim < 2 or points.shape[-1] != 2:
        raise InputError(f"points must be N x 2 (x, y), got shape {points.shape}")
    if labels.shape != points.shape[:-1]:
        raise InputError(f"{labels.size} labels for {points.shape[:-1]} points")
    if not np.all(np.isfinite(points)):
        raise InputError("point coordinates contain NaN or infinity")
    outside = (points[..., 0] < 0) | (points[..., 0] > w) | (points[..., 1] < 0) | (points[..., 1] > h)
    if np.any(outside):
        bad = points[outside][0]
        raise InputError(f"point ({bad[0]:g}, {bad[1]:g}) is outside the {w}x{h} image")
    if not np.all((labels == 0) | (labels == 1)):
        raise InputError(f"point labels must be 1 (foreground) or 0 (background), got {np.unique(labels).tolist()}")


def validate_boxes(boxes: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """Check B x 4 boxes (finite, x0 <= x1, y0 <= y1, overlapping the image); return them clipped."""
    h, w = image_size
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"boxes must be B x 4 (x0, y0, x1, y1), got shape {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise InputError("box coordinates contain NaN or infinity")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise InputError("box corners must satisfy x0 <= x1 and y0 <= y1")
    if np.any((boxes[:, 2] < 0) | (boxes[:, 0] > w) | (boxes[:, 3] < 0) | (boxes[:, 1] > h)):
        raise InputError(f"box lies entirely outside the {w}x{h} image")
    # Detector boxes often poke slightly past the border: clip instead of rejecting.
    out = boxes.astype(np.float64, copy=True)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def validate_mask_input(mask_input: np.ndarray, low_res: int) -> None:
    if mask_input.shape[-2:] != (low_res, low_res) or mask_input.ndim not in (3, 4):
        raise InputError(f"mask_input must be (B x) 1 x {low_res} x {low_res} low-res logits, got {mask_input.shape}")
    if not np.all(np.isfinite(mask_input)):
        raise InputError("mask_input contains NaN or infinity")
