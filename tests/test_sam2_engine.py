"""SAM 2 through the engine's other front ends: automatic mask generation and batched prompts."""
import numpy as np
import pytest

from conftest import synthetic_image
from sam_ros.engine.automatic import AutomaticMaskGenerator
from sam_ros.engine.prompts import Prompt
from sam_ros.engine.sam2_predictor import Sam2Predictor
from sam_ros.model.sam2 import build_sam2
from test_sam2_parity import TINY, randomize_sam2


@pytest.fixture(scope="module")
def predictor():
    model = build_sam2(TINY)
    model.load_state_dict(randomize_sam2(model.state_dict(), 5), strict=True)
    return Sam2Predictor(model.eval())


@pytest.fixture(scope="module")
def image():
    return synthetic_image(150, 200, seed=9)


def test_automatic_masks_are_the_predictors_masks(predictor, image):
    """Every automatic mask is one of the 3 masks the predictor gives for its grid point (the
    generator decodes the grid in batches: pixels at the threshold may flip, so masks match by IoU)."""
    amg = AutomaticMaskGenerator(predictor, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                 box_nms_thresh=1.0)
    records = amg.generate(image)
    assert records
    emb = predictor.encode(image)
    for r in records:
        pred = predictor.decode(emb, point_coords=np.array(r["point_coords"]), point_labels=np.array([1]))
        seg = r["segmentation"]
        ious = [(m & seg).sum() / max(1, (m | seg).sum()) for m in pred.masks]
        k = int(np.argmax(ious))
        assert ious[k] > 0.99, (r["point_coords"], ious)
        assert r["predicted_iou"] == pytest.approx(float(pred.iou_predictions[k]), abs=1e-4)


def test_predict_prompts_mixes_shapes(predictor, image):
    emb = predictor.encode(image)
    prompts = [Prompt(points=np.array([[50.0, 40.0]]), labels=np.array([1])),
               Prompt(box=np.array([20.0, 20.0, 120.0, 100.0]), multimask=False),
               Prompt(points=np.array([[150.0, 100.0]]), labels=np.array([1]))]
    preds = predictor.predict_prompts(emb, prompts)
    one = predictor.decode(emb, box=np.array([20.0, 20.0, 120.0, 100.0]), multimask_output=False)
    np.testing.assert_array_equal(preds[1].masks, one.masks)
    assert preds[0].masks.shape == (3, 150, 200) and preds[0].object_score_logits.shape == (1,)
    assert np.isfinite(preds[2].iou_predictions).all()


def test_region_crops_are_the_full_frame_masks(predictor, image):
    """SAM 2's masks come as region crops (main's MaskPrediction) with exactly the pixels and
    stability scores of its full-frame logits (one bilinear resize from the low-res logits)."""
    emb = predictor.encode(image)
    kwargs = dict(point_coords=np.array([[[50.0, 40.0]], [[150.0, 100.0]]]), point_labels=np.ones((2, 1)))
    crops = predictor.decode(emb, **kwargs)
    logits = predictor.decode(emb, **kwargs, return_logits=True)
    assert crops.crops is not None and crops.masks.shape == logits.masks.shape == (2, 3, 150, 200)
    np.testing.assert_array_equal(crops.masks, logits.masks > 0)
    np.testing.assert_array_equal(crops.stability_scores, logits.stability_scores)
    np.testing.assert_array_equal(crops.object_score_logits, logits.object_score_logits)
    c = crops.crop(1, 2)
    assert c.area == int((logits.masks[1, 2] > 0).sum())
