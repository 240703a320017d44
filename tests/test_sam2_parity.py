"""SAM 2 parity with Meta's sam2 1.1.0: same random state dict on both sides.

Models: SAM 2.1 hiera tiny with its full trunk, and SAM 2.1 hiera large reduced in depth (one
block per stage but three in stage 3, one of them global; width, heads, windows and background
embedding of large). Both run at a 256 px input instead of 1024 (the configs' image_size; every
part scales with it: 64 x 64 stride-4 features, 16 x 16 embedding) so that a test takes
seconds on a shared CPU.

Tolerances: the image encoder runs the same float32 operations in the same order (bit-equal
here); the heads differ in association order (our decoder folds projections and upscales with
matrix products, see sam_ros/model/transformer.py), so logits agree to ~1e-4 relative to their
range, IoU/object scores to 1e-4. Binary masks are compared away from the threshold: pixels whose
reference logit is within 1e-3 of 0 may flip.
"""
import dataclasses

import numpy as np
import pytest
import torch

import reference
from conftest import randomize_state_dict, synthetic_image
from sam_ros.engine.sam2_predictor import Sam2Predictor
from sam_ros.model.sam2 import HieraConfig, Sam2Config, build_sam2

IMAGE_SIZE = 256

TINY = Sam2Config(HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7)), image_size=IMAGE_SIZE)
LARGE_REDUCED = Sam2Config(HieraConfig(144, 2, (1, 1, 3, 1), (3,), (8, 4, 16, 8), (7, 7)), image_size=IMAGE_SIZE)

REFERENCE_CONFIGS = {
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", TINY, []),
    "large_reduced": ("configs/sam2.1/sam2.1_hiera_l.yaml", LARGE_REDUCED, [
        "++model.image_encoder.trunk.stages=[1,1,3,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
    ]),
}


def randomize_sam2(sd, seed):
    """conftest's random weights plus SAM 2's own learned vectors at O(0.5) (layer scales,
    no-memory / no-object embeddings, temporal encodings), so that none of them is ~0."""
    out = randomize_state_dict(sd, seed)
    g = torch.Generator().manual_seed(seed + 1000)
    for k, v in out.items():
        if k.endswith(("gamma", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
                       "maskmem_tpos_enc", "obj_score_token.weight", "pos_embed_window")):
            out[k] = torch.randn(v.shape, generator=g) * 0.5
    return out


def make_sam2_pair(name: str, seed: int = 0, video: bool = False):
    config_file, cfg, overrides = REFERENCE_CONFIGS[name]
    overrides = overrides + [f"++model.image_size={cfg.image_size}"]
    ref = reference.build_sam2_reference(config_file, overrides, video=video)
    ours = build_sam2(cfg)
    sd = randomize_sam2(ours.state_dict(), seed)
    ref.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)
    return ref.eval(), ours.eval(), sd


class ImagePair:
    def __init__(self, name: str):
        self.ref_model, self.our_model, self.state_dict = make_sam2_pair(name, seed=7)
        reference.sam2()
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.ref = SAM2ImagePredictor(self.ref_model)
        s = IMAGE_SIZE
        self.ref._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
        self.ours = Sam2Predictor(self.our_model)
        self.image = synthetic_image(180, 240, seed=3)
        with torch.inference_mode():
            self.ref.set_image(self.image)
        self.embedding = self.ours.encode(self.image)


@pytest.fixture(scope="module", params=list(REFERENCE_CONFIGS))
def pair(request):
    return ImagePair(request.param)


def _close(ours, ref, rel=1e-4):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max())
    assert err <= rel * scale, f"max error {err} vs scale {scale}"


def _same_masks(ours, ref_logits, threshold=0.0):
    ref_logits = np.asarray(ref_logits)
    decided = np.abs(ref_logits - threshold) > 1e-3
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(np.asarray(ours)[decided], (ref_logits > threshold)[decided])


def test_image_embedding_and_high_res_features(pair):
    ref_feats = pair.ref._features
    _close(pair.embedding.features, ref_feats["image_embed"])
    for ours, ref in zip(pair.embedding.high_res_features, ref_feats["high_res_feats"]):
        _close(ours, ref)
    assert pair.embedding.features.shape == (1, 256, IMAGE_SIZE // 16, IMAGE_SIZE // 16)
    assert pair.embedding.high_res_features[0].shape == (1, 32, IMAGE_SIZE // 4, IMAGE_SIZE // 4)
    assert pair.embedding.high_res_features[1].shape == (1, 64, IMAGE_SIZE // 8, IMAGE_SIZE // 8)


def test_encoder_pyramid_and_position_encodings(pair):
    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = pair.our_model.forward_image(x)
        ref = pair.ref_model.forward_image(x)
    for key in ("backbone_fpn", "vision_pos_enc"):
        assert len(ours[key]) == len(ref[key]) == 3
        for a, b in zip(ours[key], ref[key]):
            _close(a, b, rel=1e-5)
    _close(ours["vision_features"], ref["vision_features"], rel=1e-5)


PROMPTS = {
    "one_click": dict(point_coords=np.array([[100.0, 90.0]]), point_labels=np.array([1])),
    "clicks": dict(point_coords=np.array([[100.0, 90.0], [30.0, 20.0], [200.0, 150.0]]),
                   point_labels=np.array([1, 0, 1])),
    "box": dict(box=np.array([40.0, 30.0, 190.0, 160.0])),
    "box_and_click": dict(box=np.array([40.0, 30.0, 190.0, 160.0]), point_coords=np.array([[60.0, 50.0]]),
                          point_labels=np.array([0])),
}


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_predict_masks_iou(pair, prompt, multimask):
    kwargs = PROMPTS[prompt]
    with torch.inference_mode():
        ref_logits, ref_iou, ref_low = pair.ref.predict(**kwargs, multimask_output=multimask, return_logits=True)
    ours = pair.ours.decode(pair.embedding, **kwargs, multimask_output=multimask)
    assert ours.masks.shape == ref_logits.shape == (3 if multimask else 1, 180, 240)
    _same_masks(ours.masks, ref_logits)
    _close(ours.iou_predictions, ref_iou)
    _close(ours.low_res_logits, ref_low)
    assert ours.object_score_logits.shape == (1,)


def test_mask_input_refinement(pair):
    """The low-res logits of one prediction fed back with a second click."""
    first = dict(point_coords=np.array([[100.0, 90.0]]), point_labels=np.array([1]))
    with torch.inference_mode():
        _, ref_iou, ref_low = pair.ref.predict(**first, multimask_output=True)
    best = ref_low[np.argmax(ref_iou)][None]
    second = dict(point_coords=np.array([[100.0, 90.0], [150.0, 60.0]]), point_labels=np.array([1, 0]),
                  mask_input=best)
    with torch.inference_mode():
        ref_logits, ref_iou2, ref_low2 = pair.ref.predict(**second, multimask_output=False, return_logits=True)
    ours = pair.ours.decode(pair.embedding, **second, multimask_output=False)
    _same_masks(ours.masks, ref_logits)
    _close(ours.iou_predictions, ref_iou2)
    _close(ours.low_res_logits, ref_low2)


def test_object_scores_and_batched_prompts(pair):
    """Several objects in one call; object scores against the reference's mask decoder."""
    coords = np.array([[[100.0, 90.0]], [[30.0, 20.0]], [[200.0, 150.0]]])
    labels = np.ones((3, 1))
    ours = pair.ours.decode(pair.embedding, point_coords=coords, point_labels=labels, multimask_output=True)
    m = pair.ref_model
    with torch.inference_mode():
        pts = torch.as_tensor(pair.ours.transform_coords(coords, (180, 240)), dtype=torch.float32)
        sparse, dense = m.sam_prompt_encoder(points=(pts, torch.ones(3, 1, dtype=torch.int32)), boxes=None, masks=None)
        low, iou, _, obj = m.sam_mask_decoder(
            image_embeddings=pair.ref._features["image_embed"], image_pe=m.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            repeat_image=True, high_res_features=pair.ref._features["high_res_feats"])
    _close(ours.object_score_logits, obj)
    _close(ours.iou_predictions, iou)
    _close(ours.low_res_logits, low.clamp(-32, 32))
    for i in range(3):
        with torch.inference_mode():
            ref_logits, ref_iou, _ = pair.ref.predict(point_coords=coords[i], point_labels=labels[i],
                                                      return_logits=True)
        _same_masks(ours.masks[i], ref_logits)


def test_state_dict_round_trip_strict(pair):
    again = build_sam2(dataclasses.replace(pair.our_model.config))
    again.load_state_dict(pair.our_model.state_dict(), strict=True)
    assert set(again.state_dict()) == set(pair.ref_model.state_dict())
    pair.ref_model.load_state_dict(again.state_dict(), strict=True)
    for k, v in again.state_dict().items():
        assert torch.equal(v, pair.state_dict[k]), k


def test_new_weights_after_a_frame_are_not_served_stale_position_embeddings(pair):
    """The encoder keeps its resized position embedding between frames: a state dict loaded (or a
    cast) after a frame was encoded must give the new model's output, as a fresh model does."""
    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    model = build_sam2(dataclasses.replace(pair.our_model.config)).eval()
    model.load_state_dict(pair.state_dict, strict=True)
    other = randomize_sam2(pair.state_dict, 99)
    fresh = build_sam2(dataclasses.replace(pair.our_model.config)).eval()
    fresh.load_state_dict(other, strict=True)
    with torch.inference_mode():
        first = model.forward_image(x)["vision_features"]
        model.load_state_dict(other, strict=True)
        second = model.forward_image(x)["vision_features"]
        expected = fresh.forward_image(x)["vision_features"]
        assert not torch.equal(first, second)
        assert torch.equal(second, expected)
        model.to(torch.bfloat16)
        assert model.image_encoder.trunk.pos_embed.dtype == torch.bfloat16
        cast = model.forward_image(x.bfloat16())["vision_features"]  # (the neck's top-down sum is fp32)
        rel = float((cast.float() - expected).abs().max() / expected.abs().max())
        assert rel < 5e-2
