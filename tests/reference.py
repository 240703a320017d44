"""Import Meta's `segment-anything`, `sam2` and MobileSAM's code (test dependencies) without torchvision/timm.

Both packages import torchvision (and MobileSAM timm) at import time, for a handful of helpers
that the model code never calls in our tests. PyPI's torchvision does not import beside the CPU
torch we pin, so small test-only stand-ins are registered in ``sys.modules`` first. The stand-ins
are not what is under test: the resize stand-in calls PIL exactly as torchvision does for
segment-anything's ResizeLongestSide, and NMS uses our box NMS, which has its own tests against a brute-force definition.
sam2's image transforms (ToTensor, then a scripted Resize + Normalize) are stood in for by what
torchvision does on tensors: scale to [0, 1], bilinear resize with antialiasing
(``torch.nn.functional.interpolate``), per-channel normalisation.
"""
import importlib
import sys
import types
from typing import List, Tuple

import numpy as np
import torch


def _install_torchvision_standin() -> None:
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    from sam_ros.engine import mask_utils

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    tfs = types.ModuleType("torchvision.transforms")
    tff = types.ModuleType("torchvision.transforms.functional")

    def box_area(b: torch.Tensor) -> torch.Tensor:
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def batched_nms(b, scores, idxs, iou_threshold):
        return mask_utils.batched_nms(b, scores, idxs, iou_threshold)

    # What torchvision does for ResizeLongestSide.apply_image's call: to_pil_image of an H x W x 3
    # uint8 array is Image.fromarray (mode RGB); resize of a PIL image to [h, w] with the default
    # (bilinear) interpolation is img.resize((w, h), BILINEAR). PIL itself, not our code.
    from PIL import Image

    def to_pil_image(image):
        return Image.fromarray(np.asarray(image))

    def resize(image, size):
        h, w = size
        return image.resize((w, h), Image.Resampling.BILINEAR)

    boxes.box_area, boxes.batched_nms = box_area, batched_nms
    ops.boxes = boxes
    tff.resize, tff.to_pil_image = resize, to_pil_image
    tfs.functional = tff
    tfs.ToTensor, tfs.Resize, tfs.Normalize = ToTensor, Resize, Normalize
    tv.ops, tv.transforms = ops, tfs
    sys.modules.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
                        "torchvision.transforms": tfs, "torchvision.transforms.functional": tff})


class ToTensor:
    """H x W x C uint8 array -> C x H x W float32 in [0, 1]."""

    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(image))).permute(2, 0, 1).float() / 255.0


class Resize(torch.nn.Module):
    """torchvision's Resize on a float C x H x W tensor: bilinear, antialiased."""

    def __init__(self, size: Tuple[int, int]) -> None:
        super().__init__()
        self.size: List[int] = [int(size[0]), int(size[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False,
                                               antialias=True)[0]


class Normalize(torch.nn.Module):
    def __init__(self, mean: List[float], std: List[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _install_timm_standin() -> None:
    try:
        import timm  # noqa: F401
        return
    except Exception:
        pass
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")

    class DropPath(torch.nn.Identity):
        def __init__(self, drop_prob=None):
            super().__init__()

    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    models.layers, models.registry = layers, registry
    timm.models = models
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                        "timm.models.registry": registry})


def segment_anything():
    _install_torchvision_standin()
    return importlib.import_module("segment_anything")


def mobile_sam():
    _install_torchvision_standin()
    _install_timm_standin()
    return importlib.import_module("mobile_sam")


def sam2():
    """Meta's sam2 package (its hydra configs are registered on import)."""
    _install_torchvision_standin()
    return importlib.import_module("sam2")


def build_sam2_reference(config: str, overrides=(), video: bool = False):
    """Meta's SAM 2 model (random init, eval mode, CPU) for a packaged config such as
    "configs/sam2.1/sam2.1_hiera_t.yaml", with hydra overrides (e.g. a shallower trunk).
    video=True builds its SAM2VideoPredictor."""
    sam2()
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    if video:
        return build_sam2_video_predictor(config, None, device="cpu", hydra_overrides_extra=list(overrides))
    return build_sam2(config, None, device="cpu", hydra_overrides_extra=list(overrides))
