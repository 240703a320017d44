"""SAM 2 streaming video tracking against Meta's SAM2VideoPredictor (sam2 1.1.0) fed the same frames.

Our tracker sees one frame at a time; the reference loads a video up front. Streaming is
reproduced on the reference side by propagating in segments: prompts on frame 0 for two objects
(a click, then a second click; a box), propagation to frame 8, a refinement click on frame 8,
propagation to frame 13, removal of an object, propagation to the end. An object added on a later
frame (4) is a reference session of its own whose video starts at that frame: the reference
would otherwise track it backwards into frames before it was added (it tracks objects
independently, so nothing else changes). Videos are >= 16 frames: the object-pointer temporal
encoding is normalised by min(video length, 16) - 1 in the reference and by 15 in a stream.

The reference's hole filling of the low-res masks needs its CUDA extension, which is not built
here: it warns and skips it, and we have none (a known difference on machines with the extension).

Same random weights, SAM 2.1 hiera tiny at a 128 px input. The reference stores memories in
bfloat16, so do we; the float32 paths around them round differently (our decoder's association
order), which a bfloat16 rounding can amplify to ~1e-3 of the logits' range: logits are compared
at 1e-2 of their range, masks away from the threshold, object scores at 1e-2.
"""
import os

import cv2
import numpy as np
import pytest
import torch

import reference
from sam_ros.engine.sam2_predictor import Sam2Predictor
from sam_ros.engine.sam2_video import Sam2VideoTracker
from sam_ros.model.sam2 import HieraConfig, Sam2Config, build_sam2
from test_sam2_parity import randomize_sam2

SIZE = 128
TINY_128 = Sam2Config(HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7)), image_size=SIZE)
N_FRAMES, H, W = 20, 96, 128
ADD_AT, REFINE_AT, REMOVE_AT = 4, 8, 14


def make_frames():
    """A disc moving right, a square moving down, on a gradient with noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = []
    for t in range(N_FRAMES):
        img = np.stack([xx * 2, yy * 2, 100 + 0 * xx], axis=-1)
        disc = (yy - 50) ** 2 + (xx - (20 + 3 * t)) ** 2 < 14 ** 2
        img[disc] = (240, 40, 50)
        y0 = 10 + 2 * t
        img[y0:y0 + 20, 80:100] = (30, 200, 60)
        img += rng.normal(0, 6, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    overrides = [f"++model.image_size={SIZE}"]
    ref = reference.build_sam2_reference("configs/sam2.1/sam2.1_hiera_t.yaml", overrides, video=True).eval()
    ours = build_sam2(TINY_128)
    sd = randomize_sam2(ours.state_dict(), 21)
    ours.load_state_dict(sd, strict=True)
    ref.load_state_dict(sd, strict=True)
    frames = make_frames()
    predictor = Sam2Predictor(ours.eval())
    folder = tmp_path_factory.mktemp("video")
    for i, f in enumerate(frames):
        cv2.imwrite(os.fspath(folder / f"{i:05d}.jpg"), f[..., ::-1])
    with torch.inference_mode():
        images = torch.cat([ours.preprocess(torch.from_numpy(f).permute(2, 0, 1)[None].float()) for f in frames])
    return ref, predictor, frames, folder, images


def _ref_state(ref, folder, images, start):
    state = ref.init_state(os.fspath(folder))
    # The same input tensors as ours (the reference would resize the JPEGs with PIL).
    state["images"] = images[start:]
    state["num_frames"] = len(images) - start
    state["cached_features"] = {}
    return state


def _ref_out(state, obj_idx, frame_idx):
    d = state["output_dict_per_obj"][obj_idx]
    out = d["cond_frame_outputs"].get(frame_idx) or d["non_cond_frame_outputs"].get(frame_idx)
    return out["pred_masks"], float(out["object_score_logits"].reshape(-1)[0])


def _compare(ours, ref_low, ref_video_logits, ref_obj):
    low = ours.low_res_logits.float()
    scale = max(1.0, float(ref_low.abs().max()))
    assert float((low - ref_low).abs().max()) <= 1e-2 * scale
    assert abs(ours.object_score_logit - ref_obj) <= 1e-2 * max(1.0, abs(ref_obj))
    logits = ref_video_logits.numpy()
    decided = np.abs(logits) > 1e-2 * scale
    np.testing.assert_array_equal(ours.mask[decided], logits[decided] > 0)


def test_streaming_matches_reference_video_predictor(setup):
    ref, predictor, frames, folder, images = setup
    tracker = Sam2VideoTracker(predictor)
    click1, click1b = np.array([[20.0, 50.0]]), np.array([[26.0, 56.0]])
    box2 = np.array([76.0, 6.0, 104.0, 34.0])
    click3 = np.array([[90.0, 30.0]])
    click_refine = np.array([[45.0, 48.0]])

    # ---- reference, in segments -------------------------------------------------------------
    ref_masks = {}  # (obj_id, frame) -> video-res logits
    ref_outs = {}   # (obj_id, frame) -> (low-res logits, object score)
    with torch.inference_mode():
        sa = _ref_state(ref, folder, images, 0)
        ref.add_new_points_or_box(sa, 0, 1, points=click1, labels=np.array([1]))
        ref.add_new_points_or_box(sa, 0, 1, points=click1b, labels=np.array([0]), clear_old_points=False)
        ref.add_new_points_or_box(sa, 0, 2, box=box2)

        def run(state, start, count, offset=0):
            for f, ids, masks in ref.propagate_in_video(state, start_frame_idx=start, max_frame_num_to_track=count):
                for i, obj in enumerate(ids):
                    ref_masks[(obj, f + offset)] = masks[i, 0]
                    ref_outs[(obj, f + offset)] = _ref_out(state, state["obj_id_to_idx"][obj], f)

        run(sa, 0, REFINE_AT)                        # frames 0..8
        _, ids, masks = ref.add_new_points_or_box(sa, REFINE_AT, 1, points=click_refine, labels=np.array([1]))
        ref_masks[(1, REFINE_AT)] = masks[ids.index(1), 0]
        d = sa["temp_output_dict_per_obj"][0]["non_cond_frame_outputs"][REFINE_AT]
        ref_outs[(1, REFINE_AT)] = (d["pred_masks"], float(d["object_score_logits"].reshape(-1)[0]))
        run(sa, REFINE_AT + 1, REMOVE_AT - REFINE_AT - 2)  # frames 9..13
        ref.remove_object(sa, 2)
        run(sa, REMOVE_AT, N_FRAMES)                # frames 14..19
        sb = _ref_state(ref, folder, images, ADD_AT)
        ref.add_new_points_or_box(sb, 0, 3, points=click3, labels=np.array([1]))
        run(sb, 0, N_FRAMES, offset=ADD_AT)

    # ---- ours, one frame at a time ----------------------------------------------------------
    compared = {1: 0, 2: 0, 3: 0}
    present = 0
    for f, frame in enumerate(frames):
        emb = predictor.encode(frame)
        if f == 0:
            tracker.add_object(1, emb, 0, points=click1, labels=np.array([1]))
            tracker.refine(1, emb, 0, points=click1b, labels=np.array([0]))
            tracker.add_object(2, emb, 0, box=box2)
        if f == ADD_AT:
            tracker.add_object(3, emb, f, points=click3, labels=np.array([1]))
        if f == REMOVE_AT:
            tracker.remove_object(2)
        results = tracker.track(emb, f)
        if f == REFINE_AT:
            results[1] = tracker.refine(1, emb, f, points=click_refine, labels=np.array([1]))
        expected = {1, 3} if f >= REMOVE_AT else {1, 2} | ({3} if f >= ADD_AT else set())
        assert set(results) == expected, f
        for obj, res in results.items():
            low, score = ref_outs[(obj, f)]
            _compare(res, low, ref_masks[(obj, f)], score)
            compared[obj] += 1
            present += res.present
    assert compared == {1: N_FRAMES, 2: REMOVE_AT, 3: N_FRAMES - ADD_AT}
    assert present > 0
    # Bounded memory: the conditioning frame + the max(num_maskmem, max_obj_ptrs) - 1 = 15 last frames.
    assert tracker.memory_size(1) == (1, 15)
    assert tracker.memory_size(3) == (1, 15)


def test_memory_bank_is_bounded(setup):
    """Over many frames with corrections: at most max_cond_frames conditioning frames (the first
    is kept), the last 15 frames, and no growth of the tracker's tensors."""
    _, predictor, frames, _, _ = setup
    tracker = Sam2VideoTracker(predictor, max_cond_frames=3, refinements_as_conditioning=True)
    embs = [predictor.encode(f) for f in frames[:3]]
    tracker.add_object(7, embs[0], 0, points=np.array([[20.0, 50.0]]), labels=np.array([1]))
    sizes = []
    for t in range(1, 50):
        emb = embs[t % 3]
        tracker.track(emb, t)
        if t % 8 == 0:
            tracker.refine(7, emb, t, points=np.array([[30.0 + t % 50, 50.0]]), labels=np.array([1]))
        state = tracker.objects[7]
        sizes.append(sum(m.features.numel() for m in list(state.cond.values()) + list(state.recent.values())))
    state = tracker.objects[7]
    assert list(state.cond) == [0, 40, 48]
    assert sorted(state.recent) == [t for t in range(35, 50) if t not in (40, 48)]
    per_frame = state.recent[49].features.numel()
    assert max(sizes) <= (3 + 15) * per_frame
    assert max(sizes[-15:]) <= max(sizes[15:30])  # flat, not growing
    with pytest.raises(KeyError):
        tracker.remove_object(8)
    tracker.remove_object(7)
    assert tracker.object_ids == []


def test_chunked_attention_equals_fused_attention():
    """The bf16 CPU path's attention (query chunks; values broadcast over heads) is the same
    function as torch's fused kernel: compared in float32, to float32 rounding."""
    import torch.nn.functional as F

    from sam_ros.model.common import cpu_bf16_attention

    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 2, 300, 16, generator=g), torch.randn(2, 2, 530, 16, generator=g)
    v = torch.randn(2, 1, 530, 8, generator=g)
    expected = F.scaled_dot_product_attention(q, k, v.expand(-1, 2, -1, -1))
    got = cpu_bf16_attention(q, k, v, chunk=64)  # 300 queries: 4 whole chunks and a partial one
    assert got.shape == (2, 2, 300, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_rope_attention_bf16_path_matches_fp32():
    """Cross-attention to 64-channel memories in bf16 attends the raw memory and projects after
    (softmax(S) (X W^T + b) = (softmax(S) X) W^T + b): the same result as float32 SDPA up to
    bf16 rounding (8 bits of mantissa: ~1e-2 of the output's range)."""
    from sam_ros.model.sam2.memory_attention import RoPEAttention

    torch.manual_seed(4)
    attn = RoPEAttention(64, kv_in_dim=16, rope_k_repeat=True).eval()
    q, k, v = torch.randn(1, 64, 64), torch.randn(1, 2 * 64 + 4, 16), torch.randn(1, 2 * 64 + 4, 16)
    with torch.inference_mode():
        ref = attn(q, k, v, num_k_exclude_rope=4)
        attn16 = RoPEAttention(64, kv_in_dim=16, rope_k_repeat=True).eval()
        attn16.load_state_dict(attn.state_dict())
        attn16.to(torch.bfloat16)
        got = attn16(q.bfloat16(), k.bfloat16(), v.bfloat16(), num_k_exclude_rope=4).float()
    assert float((got - ref).abs().max()) <= 2e-2 * float(ref.abs().max())


def test_bf16_tracking_follows_fp32_tracking(setup):
    """SAM 2 with a bfloat16 encoder and decoder (memory attention and memory encoder too) tracks
    the video like float32: same presence on every frame and masks with IoU >= 0.9 against the
    float32 masks (random weights: bf16 rounding, fed back through the memory, is the only
    difference)."""
    _, predictor, frames, _, _ = setup
    copy = build_sam2(TINY_128)
    copy.load_state_dict(predictor.model.state_dict(), strict=True)
    bf16 = Sam2Predictor(copy.eval(), encoder_dtype=torch.bfloat16, decoder_dtype=torch.bfloat16)
    trackers = {"fp32": Sam2VideoTracker(predictor), "bf16": Sam2VideoTracker(bf16)}
    preds = {"fp32": predictor, "bf16": bf16}
    ious, scores = [], []
    for f, frame in enumerate(frames):
        res = {}
        for name, tracker in trackers.items():
            emb = preds[name].encode(frame)
            if f == 0:
                tracker.add_object(1, emb, 0, points=np.array([[20.0, 50.0]]), labels=np.array([1]))
                tracker.add_object(2, emb, 0, box=np.array([76.0, 6.0, 104.0, 34.0]))
            res[name] = tracker.track(emb, f)
        assert set(res["bf16"]) == {1, 2}
        for obj in (1, 2):
            a, b = res["fp32"][obj], res["bf16"][obj]
            assert a.present == b.present, (f, obj)
            scores.append(abs(a.object_score_logit - b.object_score_logit) / max(1.0, abs(a.object_score_logit)))
            if a.present and a.mask.any():
                ious.append((a.mask & b.mask).sum() / (a.mask | b.mask).sum())
    assert len(ious) >= 10
    assert min(ious) >= 0.9, ious
    assert max(scores) <= 0.1, scores
