"""SAM 2 in the streaming session: a SAM 2 checkpoint through the factory, its targets tracked by
the memory tracker on encoded frames and by optical flow in between, states from the object
score, and a bounded memory bank over a long stream.

A small random SAM 2.1 (hiera tiny's trunk at a 128 px input, saved as our safetensors with its
config) keeps it fast; random weights make meaningless masks, so the session's masks and object
scores are checked against `Sam2VideoTracker` (parity-tested against Meta's video predictor in
test_sam2_video.py) fed the same encoded frames and the same prompt, and the object-score head's
bias is pushed up or down to make the object present or absent on every frame.
"""
import cv2
import numpy as np
import pytest
import torch

from sam_ros.data.tracking_scenes import TrackingSequence
from sam_ros.engine.factory import create_predictor
from sam_ros.engine.prompts import Prompt
from sam_ros.engine.sam2_predictor import Sam2Predictor
from sam_ros.engine.sam2_video import Sam2VideoTracker
from sam_ros.engine.session import SessionConfig, StreamingSession
from sam_ros.engine.tracking.memory_tracker import MemoryTracker
from sam_ros.engine.tracking.target import TargetState
from sam_ros.engine.tracking.tracker import TrackingConfig
from test_sam2_checkpoint import random_sam2_file
from test_sam2_video import TINY_128

H, W = 96, 128
OBJ_SCORE_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(random_sam2_file(tmp_path_factory.mktemp("sam2"), TINY_128, 3)[0])


def _predictor(checkpoint, obj_bias=None):
    p = create_predictor(checkpoint=checkpoint)   # backend auto, as the node's default
    if obj_bias is not None:
        with torch.no_grad():
            dict(p.model.named_parameters())[OBJ_SCORE_BIAS].fill_(obj_bias)
    return p


def _scene(num_frames):
    seq = TrackingSequence("translate", 7001, height=H, width=W, num_frames=num_frames)
    t0 = seq.first_visible()
    gt = seq.target_mask(seq.frame(t0))
    x, y, w, h = cv2.boundingRect(gt.view(np.uint8))
    return seq, t0, np.array([x, y, x + w, y + h], np.float64)


def test_sam2_checkpoint_gets_the_memory_tracker(checkpoint):
    p = _predictor(checkpoint)
    assert isinstance(p, Sam2Predictor) and p.backend_name == "torch" and p.img_size == 128
    assert isinstance(StreamingSession(p).tracker, MemoryTracker)


@pytest.mark.parametrize("obj_bias", [None, 20.0, -20.0], ids=["as_trained", "present", "absent"])
def test_session_tracks_a_sam2_target_like_the_video_tracker(checkpoint, obj_bias):
    """Every frame gets one result for the target; encoded frames (every 2nd) carry the memory
    tracker's mask and object score, the frames between are propagated by flow; the state follows
    the object score."""
    predictor = _predictor(checkpoint, obj_bias)
    seq, t0, box = _scene(40)
    n = 12
    session = StreamingSession(predictor, SessionConfig(encode_every=2))
    # The same prompt and encoded frames (the session's embeddings), straight into the video tracker.
    video = Sam2VideoTracker(predictor)
    frames = [seq.frame(t0 + i).image for i in range(n)]
    session.step(frames[0], stamp=t0 / 30, encode=True)
    first = session.add_target("obj", Prompt(box=box, multimask=False))
    assert first.state in (TargetState.TRACKING.value, TargetState.OCCLUDED.value)
    video.add_object(1, session.cache.latest().embedding, 0, box=box)
    encoded_frames = 1
    for i in range(1, n):
        result = session.step(frames[i], stamp=(t0 + i) / 30)
        assert [o.target_id for o in result.objects] == ["obj"]
        obj = result.objects[0]
        assert obj.state in {s.value for s in TargetState if s != TargetState.ENDED}
        assert (obj.mask is not None) == (obj.state in ("tracking", "reacquired"))
        if result.encoded:
            want = video.track(session.cache.latest().embedding, encoded_frames)[1]
            encoded_frames += 1
            assert not obj.propagated and obj.age_frames == 0
            present = want.present and want.prediction.crop(0).area > 0
            assert (obj.mask is not None) == present, (i, want.object_score_logit)
            if present:
                np.testing.assert_array_equal(obj.mask, want.mask)
                assert obj.iou == pytest.approx(want.iou, abs=1e-5)
        elif obj.mask is not None:
            assert obj.propagated and obj.age_frames == 1
    assert encoded_frames == n // 2
    t = session.targets()[0]
    if obj_bias == 20.0:
        assert t.state == TargetState.TRACKING and t.decodes == encoded_frames
    if obj_bias == -20.0:
        assert t.state == TargetState.OCCLUDED and t.absent_since is not None


def test_memory_stays_bounded_over_a_long_stream(checkpoint):
    """200 frames, every 4th encoded (memory frames are the encoded ones): the target's memory bank
    holds the conditioning frame and the last 15 memory frames, its tensors stop growing, and a
    removed target's memory is freed."""
    predictor = _predictor(checkpoint, 20.0)
    seq, t0, box = _scene(200)
    session = StreamingSession(predictor, SessionConfig(encode_every=4))
    tracker = session.tracker
    session.step(seq.frame(t0).image, stamp=t0 / 30, encode=True)
    session.add_target("obj", Prompt(box=box, multimask=False))
    sizes = []
    for i in range(1, 200):
        result = session.step(seq.frame(min(t0 + i, 199)).image, stamp=(t0 + i) / 30)
        assert len(result.objects) == 1 and result.encoded == (i % 4 == 0)
        assert result.objects[0].state == "tracking" and result.objects[0].propagated != result.encoded
        state = next(iter(tracker.video.objects.values()))
        sizes.append(sum(m.features.numel() + m.obj_ptr.numel()
                         for m in list(state.cond.values()) + list(state.recent.values())))
    assert session.stats.frames_encoded == 50
    assert tracker.memory_size("obj") == (1, 15)
    assert max(sizes[-100:]) == max(sizes[80:100])    # flat once the bank is full (16 memory frames)
    assert len(tracker._frame_idx) <= 64
    session.remove_target("obj")
    session.add_target("obj2", Prompt(box=box, multimask=False))   # the next call frees the old bank
    assert list(tracker._objects) == ["obj2"] and len(tracker.video.objects) == 1


def test_occluded_target_times_out_like_a_sam1_target(checkpoint):
    """An absent target (object score < 0 everywhere) goes occluded, lost after occluded_s and
    ended after lost_s, on the session's clock, and its memory is freed."""
    predictor = _predictor(checkpoint, -20.0)
    seq, t0, box = _scene(40)
    cfg = SessionConfig(encode_every=3, tracking=TrackingConfig(occluded_s=0.2, lost_s=0.5))
    session = StreamingSession(predictor, cfg)
    session.step(seq.frame(t0).image, stamp=0.0, encode=True)
    session.add_target("obj", Prompt(box=box, multimask=False))
    states = []
    for i in range(1, 25):
        result = session.step(seq.frame(t0 + i).image, stamp=i / 30)
        states.extend(o.state for o in result.objects)
    assert states[0] == "occluded" and "lost" in states and states[-1] == "ended"
    assert states.count("ended") == 1
    assert not session.targets() and not session.tracker.video.objects
