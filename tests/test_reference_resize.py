"""The reference resize: official checkpoints see the pixels Meta's code feeds them.

segment-anything (and MobileSAM) resize with torchvision's PIL path (ResizeLongestSide.apply_image);
our OpenCV resize differs by a few grey levels per pixel, enough to flip mask pixels. A model of
an official architecture therefore resizes like the reference by default; our embedded model keeps
OpenCV (what it was trained with). Parity here runs both predictors end to end from the raw image,
one that needs resizing (480 x 640 -> 768 x 1024), with the same random MobileSAM weights.
"""
import numpy as np
import pytest
import torch

import reference
from conftest import VIT_SMALL, make_pair, synthetic_image
from sam_ros.engine import transforms
from sam_ros.engine.predictor import SamPredictor
from sam_ros.model.build import build_sam, get_config

POINTS = np.array([[256.0, 288.0], [420.0, 120.0]])
LABELS = np.array([1, 0])
BOX = np.array([150.0, 180.0, 400.0, 430.0])


@pytest.mark.parametrize("shape", [(480, 640), (37, 1500), (1024, 700), (300, 300)])
def test_reference_resize_equals_segment_anything_resize_longest_side(shape):
    reference.segment_anything()
    from segment_anything.utils.transforms import ResizeLongestSide

    image = synthetic_image(*shape, seed=2)
    ref = ResizeLongestSide(1024).apply_image(image)
    ours = transforms.resize_longest_side(image, 1024, "reference")
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, ref)
    # Where a resize happens the two methods differ (by 1 grey level enlarging, more shrinking).
    opencv = transforms.resize_longest_side(image, 1024, "opencv")
    assert np.array_equal(opencv, ref) == (max(shape) == 1024)


def test_default_method_by_architecture():
    for variant in ("vit_b", "vit_l", "vit_h", "vit_t"):
        assert transforms.default_resize_method(get_config(variant)) == "reference"
    assert transforms.default_resize_method(get_config("sam_ros_tiny")) == "opencv"
    assert transforms.default_resize_method(None) == "opencv"
    assert SamPredictor(build_sam(VIT_SMALL)).resize == "opencv"
    assert SamPredictor(build_sam(VIT_SMALL), resize="reference").resize == "reference"
    with pytest.raises(ValueError, match="resize must be"):
        SamPredictor(build_sam(VIT_SMALL), resize="pil")
    with pytest.raises(ValueError, match="resize method"):
        transforms.resize_image(np.zeros((4, 4, 3), np.uint8), (2, 2), "nearest")


def test_official_checkpoint_matches_sam_predictor_from_the_raw_image():
    """MobileSAM's architecture (official vit_t) with random weights: set_image on the reference
    (its own resize, through the torchvision stand-in) against our encode of the same raw image."""
    ref_model, our_model, _ = make_pair("tiny_vit", seed=5)
    ms = reference.mobile_sam()
    image = synthetic_image(480, 640, seed=7)
    ref = ms.SamPredictor(ref_model)
    ours = SamPredictor(our_model)
    assert ours.resize == "reference"
    with torch.no_grad():
        ref.set_image(image)
    ours.set_image(image)
    assert ours.get_image_embedding().shape == ref.features.shape == (1, 256, 64, 64)
    assert (ours.get_image_embedding() - ref.features).abs().max() <= 5e-5

    for kwargs in (dict(point_coords=POINTS, point_labels=LABELS), dict(box=BOX)):
        ref_logits, ref_iou, _ = ref.predict(**kwargs, multimask_output=True, return_logits=True)
        out = ours.predict(**kwargs, multimask_output=True, return_logits=True)
        assert 0.02 < (ref_logits > 0).mean() < 0.98  # non-trivial masks
        assert np.abs(out.masks - ref_logits).max() <= 1e-3
        assert np.abs(out.iou_predictions - ref_iou).max() <= 1e-5
        flips = (out.masks > 0) != (ref_logits > 0)
        assert flips.mean() <= 1e-4, f"{flips.mean():.2%} of mask pixels differ"

    # With OpenCV's resize the same weights give measurably different masks: the test is sensitive.
    cv = SamPredictor(our_model, resize="opencv")
    cv.set_image(image)
    ref_logits, _, _ = ref.predict(box=BOX, multimask_output=True, return_logits=True)
    out = cv.predict(box=BOX, multimask_output=True, return_logits=True)
    assert np.abs(out.masks - ref_logits).max() > 1e-2
