"""Masks computed only inside their regions (issue 16) against full-frame upsampling.

Claims tested, bit for bit (no tolerance): inside its region a mask's logits are exactly those of
``postprocess_masks`` (the same float32 operations in the same order; the full frame is the
region path over the whole image); no pixel above threshold - |offset| lies outside the region
(so masks, areas, tight boxes and stability scores are exactly the full-frame ones); this holds
for masks touching the image border, empty and all-foreground masks, multimask candidates,
logits sitting exactly on the thresholds, non-finite logits, and images larger or smaller than
the model's input.
"""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import synthetic_image
from sam_ros.engine import transforms
from sam_ros.engine.mask_crops import MaskCrops, crops_from_low_res
from sam_ros.engine.mask_utils import crop_to_rle, mask_to_rle, stability_score
from sam_ros.engine.predictor import MaskPrediction

# (low-res side, model input side, image (H, W)): the default model (96 / 384) and SAM (256 / 1024),
# upscaled and downscaled images, portrait, an extreme aspect ratio.
GEOMETRIES = [
    (96, 384, (480, 640)), (96, 384, (1080, 1920)), (96, 384, (37, 1500)),
    (256, 1024, (720, 1280)), (256, 1024, (640, 360)), (256, 1024, (300, 200)),
]
GEOMETRY_IDS = [f"{low}-{img}-{h}x{w}" for low, img, (h, w) in GEOMETRIES]


def blob_logits(n: int, low: int, seed: int) -> torch.Tensor:
    """n x 3 x low x low logits shaped like decoder output: compact blobs of varying size on a
    negative background, some touching the frame's border, plus special cases."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(low, dtype=torch.float32), torch.arange(low, dtype=torch.float32),
                            indexing="ij")
    out = torch.empty(n, 3, low, low)
    for i in range(n):
        for m in range(3):
            cx, cy = (torch.rand(2, generator=g) * 1.2 - 0.1) * low  # centres may lie off the frame
            r = float(torch.rand(1, generator=g)) * low * (0.05 + 0.3 * m)
            d = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            out[i, m] = (r - d) * (0.5 + 2 * float(torch.rand(1, generator=g))) + torch.randn(low, low, generator=g)
    out[0, 0] = -8.0                                   # empty
    out[0, 1] = 6.0                                    # the whole frame
    out[0, 2] = -20.0
    out[0, 2, :, :3] = 4.0                             # a strip on the left border
    if n > 1:
        # Plateaus exactly at the thresholds 0 and +-1: the upsampled value is a weighted sum of
        # equal values whose float32 weights need not sum to exactly 1.
        out[1, 0] = -1.0
        out[1, 0, low // 3 : low // 2, low // 4 :] = 0.0
        out[1, 1] = torch.where(torch.rand(low, low, generator=g) > 0.5, 1.0, -1.0)
    return out


def full_frame(low_res, geometry):
    low, img, shape = geometry
    return transforms.postprocess_masks(low_res, transforms.get_preprocess_shape(*shape, img), shape, img)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
def test_region_logits_equal_full_frame_and_nothing_lies_outside(geometry):
    low, img, shape = geometry
    input_size = transforms.get_preprocess_shape(*shape, img)
    low_res = blob_logits(3, low, seed=low + shape[1]).flatten(0, 1)  # 9 masks
    full = full_frame(low_res, geometry)
    for thr in (0.0, -1.0, 1.0):
        regions = transforms.mask_regions(low_res, thr, input_size, shape, img)
        for i, (x0, y0, x1, y1) in enumerate(regions):
            inside = torch.zeros(shape, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            assert not bool(((full[i] > thr) & ~inside).any()), (thr, i, "a pixel above threshold outside its region")
            region = transforms.postprocess_region(low_res[i], (x0, y0, x1, y1), input_size, shape, img)
            assert torch.equal(region, full[i, y0:y1, x0:x1]), (thr, i)
    # The regions are tight enough to matter: the compact blobs' regions are a fraction of the frame.
    regions = transforms.mask_regions(low_res[3:], 0.0, input_size, shape, img)
    sizes = (regions[:, 2] - regions[:, 0]) * (regions[:, 3] - regions[:, 1])
    assert np.median(sizes) < 0.5 * shape[0] * shape[1]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
def test_crops_equal_full_frame_masks_areas_boxes_and_stability(geometry):
    low, img, shape = geometry
    input_size = transforms.get_preprocess_shape(*shape, img)
    low_res = blob_logits(2, low, seed=7 + low)  # 2 prompts x 3 multimask candidates
    full = full_frame(low_res, geometry)
    crops, stab = crops_from_low_res(low_res, input_size, shape, img, 0.0, 1.0)
    assert crops.shape == (2, 3) and stab.shape == (2, 3) and stab.dtype == np.float32
    masks = (full > 0).numpy()
    np.testing.assert_array_equal(crops.to_masks(), masks)
    np.testing.assert_array_equal(stab, stability_score(full, 0.0, 1.0).numpy())
    for b in range(2):
        for m in range(3):
            c = crops.crop(b, m)
            assert c.area == int(masks[b, m].sum())
            rect = cv2.boundingRect(masks[b, m].astype(np.uint8))
            assert c.bbox == (rect if rect[2] else None)
            np.testing.assert_array_equal(crops.mask(b, m), masks[b, m])
    assert crops.crop(0, 0).bbox is None and crops.crop(0, 0).mask.shape == (0, 0)       # empty
    assert crops.crop(0, 1).bbox == (0, 0, shape[1], shape[0])                            # everything
    x, y, w, h = crops.crop(0, 2).bbox
    assert (x, y, h) == (0, 0, shape[0]) and w < shape[1]                                  # left strip


def test_non_finite_logits_fall_back_to_the_whole_frame():
    geometry = (96, 384, (120, 160))
    low, img, shape = geometry
    low_res = blob_logits(1, low, seed=3)[0]
    low_res[1, 5, 5] = float("inf")
    low_res[2, 50, 60] = float("nan")
    input_size = transforms.get_preprocess_shape(*shape, img)
    regions = transforms.mask_regions(low_res, -1.0, input_size, shape, img)
    assert regions[1].tolist() == [0, 0, shape[1], shape[0]] and regions[2].tolist() == [0, 0, shape[1], shape[0]]
    full = full_frame(low_res, geometry)
    crops, stab = crops_from_low_res(low_res, input_size, shape, img)
    np.testing.assert_array_equal(crops.to_masks(), (full > 0).numpy())
    np.testing.assert_array_equal(stab, stability_score(full, 0.0, 1.0).numpy())


def test_full_frame_postprocess_still_matches_float64_interpolation():
    """The full frame is now the region path over the whole image: still SAM's two-step resize."""
    low_res = blob_logits(1, 256, seed=1)
    shape = (720, 1280)
    input_size = transforms.get_preprocess_shape(*shape, 1024)
    x = F.interpolate(low_res.double(), (1024, 1024), mode="bilinear", align_corners=False)
    expected = F.interpolate(x[..., : input_size[0], : input_size[1]], shape, mode="bilinear", align_corners=False)
    ours = transforms.postprocess_masks(low_res, input_size, shape, 1024)
    assert (ours.double() - expected).abs().max() < 1e-5


def test_region_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match="not inside"):
        transforms.postprocess_region(torch.zeros(96, 96), (0, 0, 700, 10), (288, 384), (480, 640), 384)


@pytest.mark.parametrize("seed", range(4))
def test_crop_to_rle_equals_full_mask_rle(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    for _ in range(20):
        ch, cw = int(rng.integers(0, h + 1)), int(rng.integers(0, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = rng.random((ch, cw)) < rng.choice([0.0, 0.3, 1.0])
        full = np.zeros((h, w), bool)
        full[y : y + ch, x : x + cw] = crop
        assert crop_to_rle(crop, x, y, (h, w)) == mask_to_rle(full)
    with pytest.raises(ValueError, match="not inside"):
        crop_to_rle(np.ones((3, 3), bool), w - 1, 0, (h, w))


# ---- the predictor: crops by default, full frame on request ------------------------------------------------

@pytest.mark.parametrize("shape", [(480, 640), (1080, 1920)], ids=["480x640", "1080x1920"])
def test_decode_crops_equal_full_frame_decode(tiny_predictor, shape):
    image = synthetic_image(*shape, seed=4)
    emb = tiny_predictor.encode(image)
    h, w = shape
    boxes = np.array([[0, 0, w, h], [w * 0.1, h * 0.2, w * 0.4, h * 0.6], [w * 0.7, h * 0.5, w, h],
                      [0, h * 0.8, w * 0.3, h]])  # the whole frame and boxes on the borders
    for multimask in (False, True):
        pred = tiny_predictor.decode(emb, box=boxes, multimask_output=multimask)
        assert pred.crops is not None and pred._masks is None  # nothing full-frame made yet
        in_frame = transforms.apply_boxes(boxes, shape, tiny_predictor.img_size)
        ref = tiny_predictor.decode_torch(emb, boxes=torch.as_tensor(in_frame, dtype=torch.float32),
                                          multimask_output=multimask)
        masks = ref.masks.numpy()
        assert masks.any() and not masks.all()
        np.testing.assert_array_equal(pred.stability_scores, ref.stability_scores.numpy())
        np.testing.assert_array_equal(pred.iou_predictions, ref.iou_predictions.numpy())
        for b in range(len(boxes)):
            for m in range(masks.shape[1]):
                c = pred.crop(b, m)
                assert c.area == int(masks[b, m].sum())
                np.testing.assert_array_equal(pred.mask(b, m), masks[b, m])
        np.testing.assert_array_equal(pred.masks, masks)  # materialised on first use


def test_unbatched_point_and_per_prompt_predictions_keep_crops(tiny_predictor):
    from sam_ros.engine.prompts import Prompt

    image = synthetic_image(240, 320, seed=5)
    emb = tiny_predictor.encode(image)
    one = tiny_predictor.decode(emb, point_coords=[[0, 0]], point_labels=[1])  # a corner click
    assert one.crops.shape == (3,) and one.masks.shape == (3, 240, 320)
    logits = tiny_predictor.decode(emb, point_coords=[[0, 0]], point_labels=[1], return_logits=True)
    np.testing.assert_array_equal(one.masks, logits.masks > 0)
    with pytest.raises(ValueError, match="logits"):
        logits.crop(0)
    prompts = [Prompt(np.array([[10.0, 20.0]]), np.array([1]), None, None, multimask=True),
               Prompt(np.zeros((0, 2)), np.zeros(0, np.int64), np.array([5.0, 5.0, 300.0, 200.0]), None, multimask=False)]
    for p, r in zip(prompts, tiny_predictor.predict_prompts(emb, prompts)):
        assert r.crops is not None and r._masks is None
        single = tiny_predictor.decode(emb, p.points if len(p.points) else None,
                                       p.labels if len(p.points) else None, p.box, multimask_output=p.multimask)
        np.testing.assert_array_equal(r.masks, single.masks)
    # A prediction made from full-frame bool masks (as the node builds for automatic masks) has crops too.
    dense = MaskPrediction(one.masks, one.iou_predictions, one.low_res_logits, one.stability_scores)
    for i in range(3):
        assert dense.crop(i).bbox == one.crop(i).bbox and dense.crop(i).area == one.crop(i).area
    masks, iou, low, stab = one  # unpacks like the former tuple
    assert masks.shape == (3, 240, 320) and iou.shape == (3,)


def test_mask_crops_from_masks_round_trip():
    rng = np.random.default_rng(0)
    masks = np.zeros((2, 3, 30, 40), bool)
    masks[0, 0, 3:9, 5:30] = rng.random((6, 25)) > 0.4
    masks[1, 2, 20:, 39] = True
    crops = MaskCrops.from_masks(masks)
    np.testing.assert_array_equal(crops.to_masks(), masks)
    assert crops[1].shape == (3,) and crops[1, 2].shape == ()
    assert crops[1, 2].crop().bbox == (39, 20, 1, 10) and crops.crop(0, 1).bbox is None
    np.testing.assert_array_equal(crops[1].to_masks(), masks[1])
