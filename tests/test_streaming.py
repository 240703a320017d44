"""Streaming building blocks without ROS (mailbox, embedding_cache, preemption): the latest-frame mailbox, the
embedding cache, and serving prompts between the image encoder's layers, on the real default
model."""
import threading
import time

import numpy as np
import pytest
import torch

from sam_ros.data.scenes import SceneSequence
from sam_ros.engine.factory import create_predictor
from sam_ros.engine.prompts import Prompt
from sam_ros.engine.embedding_cache import CachedFrame, EmbeddingCache
from sam_ros.engine.mailbox import LatestSlot
from sam_ros.engine.preemption import LayerPreemption


@pytest.fixture(scope="module")
def setup():
    predictor = create_predictor()
    seq = SceneSequence(3, height=240, width=320)
    a, b = seq.frame(0).image, seq.frame(6).image
    emb_a = predictor.encode(a)
    emb_b = predictor.encode(b)
    prompt = Prompt(np.array([[160.0, 120.0]]), np.array([1]), None, None, True)
    expected = predictor.predict_prompts(emb_a, [prompt])[0]
    return predictor, a, b, emb_a, emb_b, prompt, expected


def _attached(predictor, preempt):
    handles = preempt.attach(predictor.model.image_encoder)
    assert len(handles) > 10  # a checkpoint before every parameter-owning layer
    return handles


def test_prompt_served_between_encoder_layers_gives_the_same_masks(setup):
    """A prompt queued while frame B encodes is decoded (on frame A's embedding) at the next
    layer boundary, on the same thread; neither its masks nor B's embedding change."""
    predictor, a, b, emb_a, emb_b, prompt, expected = setup
    queued = [prompt]
    served = []

    def serve():
        served.append((predictor.predict_prompts(emb_a, queued[:])[0], threading.current_thread()))
        queued.clear()

    preempt = LayerPreemption(lambda: bool(queued), serve, max_pause_s=10.0)
    handles = _attached(predictor, preempt)
    try:
        preempt.begin_job()
        emb = predictor.encode(b)
    finally:
        for h in handles:
            h.remove()
    assert preempt.pauses == 1 and len(served) == 1
    got, thread = served[0]
    assert thread is threading.current_thread()
    np.testing.assert_array_equal(got.masks, expected.masks)
    np.testing.assert_array_equal(got.iou_predictions, expected.iou_predictions)
    torch.testing.assert_close(emb.features, emb_b.features, rtol=0, atol=0)
    assert 0 < preempt.job_paused_s == preempt.paused_s


def test_budget_bounds_serving_per_frame(setup):
    predictor, a, b, emb_a, emb_b, prompt, expected = setup

    def serve():  # a flood: there is always more
        time.sleep(0.03)

    preempt = LayerPreemption(lambda: True, serve, max_pause_s=0.1)
    handles = _attached(predictor, preempt)
    try:
        preempt.begin_job()
        emb = predictor.encode(b)
        assert preempt.pauses == 4 and 0.1 <= preempt.job_paused_s < 0.2  # stops once over budget
        preempt.begin_job()  # the next frame gets a fresh budget
        predictor.encode(b)
        assert preempt.pauses == 8 and 0.1 <= preempt.job_paused_s < 0.2
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(emb.features, emb_b.features, rtol=0, atol=0)


def test_nothing_queued_nothing_served_and_serve_may_reenter(setup):
    predictor, a, b, emb_a, emb_b, prompt, expected = setup
    calls = []
    flag = [False]

    def serve():
        calls.append(1)
        flag[0] = False
        predictor.encode(a)  # runs the hooked encoder itself: its checkpoints do nothing

    preempt = LayerPreemption(lambda: flag[0], serve, max_pause_s=10.0)
    handles = _attached(predictor, preempt)
    try:
        preempt.begin_job()
        predictor.encode(b)
        assert preempt.pauses == 0 and not calls
        flag[0] = True
        preempt.begin_job()
        emb = predictor.encode(b)
        assert preempt.pauses == 1 and calls == [1]
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(emb.features, emb_b.features, rtol=0, atol=0)


def test_failing_serve_propagates_and_resets():
    def serve():
        raise RuntimeError("decoder failed")

    preempt = LayerPreemption(lambda: True, serve)
    with pytest.raises(RuntimeError):
        preempt.checkpoint()
    assert not preempt._serving and preempt.pauses == 1


def test_latest_slot_keeps_newest_counts_drops_and_wakes():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(0.1) == 4
    assert slot.received == 5 and slot.dropped == 4
    t0 = time.perf_counter()
    assert slot.take(0.05) is None and time.perf_counter() - t0 >= 0.04
    # wake() ends a wait at once (other work arrived), also when it comes before the wait.
    slot.wake()
    t0 = time.perf_counter()
    assert slot.take(5.0) is None and time.perf_counter() - t0 < 1.0
    threading.Timer(0.1, slot.wake).start()
    t0 = time.perf_counter()
    assert slot.take(5.0) is None and time.perf_counter() - t0 < 2.0
    slot.close()
    assert slot.take(None) is None  # closed: no blocking


def test_embedding_cache_is_bounded_and_keyed():
    cache = EmbeddingCache(capacity=3)
    for key in range(10):
        cache.add(CachedFrame(key, embedding=None))
    assert cache.keys() == [7, 8, 9]
    assert cache.get(6) is None and cache.get(8).key == 8
    assert cache.latest().key == 9
    with pytest.raises(ValueError):
        EmbeddingCache(0)


def test_session_settings_change_while_running(setup):
    """StreamingSession.update_config (the node's runtime parameters): bounds held by the parts
    follow, tracking settings reach the tracker, unknown and restart-only names change nothing."""
    from sam_ros.engine.session import SessionConfig, StreamingSession

    predictor = setup[0]
    seq = SceneSequence(8, height=120, width=160)
    session = StreamingSession(predictor, SessionConfig(cache_size=3))
    for t in range(3):
        session.step(seq.frame(t).image, stamp=t / 10, encode=True)
    assert len(session.cache) == 3
    session.update_config(cache_size=1, max_pending_prompts=5, max_pause_s=0.01,
                          tracking={"occluded_s": 0.3, "lost_s": 2.0})
    session.step(seq.frame(3).image, stamp=0.3, encode=True)
    assert len(session.cache) == 1   # shrunk on the next insertion
    assert session.prompts.max_pending == 5 and session.preempt.max_pause_s == 0.01
    assert (session.tracker.config.occluded_s, session.tracker.config.lost_s) == (0.3, 2.0)
    for bad in ({"prompt_priority": False}, {"no_such_setting": 1}):
        with pytest.raises(ValueError, match="cannot change"):
            session.update_config(max_targets=2, **bad)
    with pytest.raises(ValueError, match="tracking.min_iuo"):
        session.update_config(tracking={"min_iuo": 0.1})
    assert session.config.max_targets == SessionConfig().max_targets   # nothing applied
