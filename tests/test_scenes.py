"""Tests of the procedural scene generator (sam_ros.data.scenes): determinism, ground-truth
invariants, the nested whole / part / subpart structure, the seed split and moving scenes."""
import random
import time

import cv2
import numpy as np
import pytest

from sam_ros.data.scenes import (EVAL_SEEDS, HELD_OUT_START, HELD_OUT_STOP, SEGMENTS_PER_OBJECT,
                                 VAL_SEEDS, Scene, SceneConfig, SceneSequence, generate_scene,
                                 is_held_out, segments_for_eval, train_seed)

SMALL = (128, 160)  # most tests: small, non-square scenes keep the file fast


def assert_valid(scene: Scene, min_area_frac: float = SceneConfig.min_area_frac,
                 max_child_frac: float = SceneConfig.max_child_frac) -> None:
    """Every ground-truth invariant the training loop and the evaluation rely on."""
    h, w = scene.image.shape[:2]
    k = len(scene)
    assert scene.image.dtype == np.uint8 and scene.image.shape == (h, w, 3)
    assert scene.masks.dtype == bool and scene.masks.shape == (k, h, w)
    for name in ("level", "parent", "object_id", "segment_id"):
        arr = getattr(scene, name)
        assert arr.shape == (k,) and np.issubdtype(arr.dtype, np.integer), name
    areas = scene.areas
    assert (areas > 0).all(), "empty mask"
    assert (areas >= min_area_frac * h * w).all(), "segment below the minimum area kept"
    assert len(set(scene.segment_id.tolist())) == k, "segment ids not unique"
    assert (scene.segment_id // SEGMENTS_PER_OBJECT == scene.object_id).all()
    for i in range(k):
        p = scene.parent[i]
        if scene.level[i] == 0:
            assert p == -1
            assert scene.segment_id[i] % SEGMENTS_PER_OBJECT == 0
        else:
            assert 0 <= p < i, "parent must come before its child"
            assert scene.level[p] == scene.level[i] - 1
            assert scene.object_id[p] == scene.object_id[i]
            assert not (scene.masks[i] & ~scene.masks[p]).any(), "child mask leaves its parent"
            assert areas[i] <= max_child_frac * areas[p] + 1e-9, "child (almost) equal to its parent"
    assert set(np.unique(scene.level).tolist()) <= {0, 1, 2}
    whole = np.flatnonzero(scene.level == 0)
    assert len(set(scene.object_id[whole].tolist())) == len(whole), "two whole masks for one object"
    if len(whole):
        assert scene.masks[whole].sum(0, dtype=np.int32).max() <= 1, "whole objects overlap"


def scenes_equal(a: Scene, b: Scene) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f))
               for f in ("image", "masks", "level", "parent", "object_id", "segment_id"))


# --------------------------------------------------------------------------- determinism

def test_same_seed_same_scene():
    a = generate_scene(17, *SMALL)
    generate_scene(18, *SMALL)  # nothing carried over between calls
    b = generate_scene(17, *SMALL)
    assert scenes_equal(a, b)
    assert (a.seed, a.frame) == (17, 0)


def test_different_seeds_differ():
    images = [generate_scene(s, *SMALL).image for s in range(6)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])


def test_global_random_state_untouched():
    np.random.seed(5)
    random.seed(5)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    generate_scene(3, *SMALL)
    SceneSequence(3, *SMALL).frame(4)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert random.getstate() == py_state


# --------------------------------------------------------------------------- invariants

@pytest.mark.parametrize("seed", range(30))
def test_invariants(seed):
    assert_valid(generate_scene(seed, *SMALL))


def test_options_change_the_distribution():
    scene = generate_scene(4, *SMALL, min_objects=1, max_objects=1, part_prob=0.0)
    assert (scene.level == 0).sum() <= 1 and (scene.level > 0).sum() == 0
    scene = generate_scene(4, *SMALL, min_area_frac=0.02)
    assert_valid(scene, min_area_frac=0.02)
    with pytest.raises(TypeError):
        generate_scene(4, *SMALL, no_such_option=1)
    with pytest.raises(ValueError):
        generate_scene(4, *SMALL, min_objects=5, max_objects=2)
    with pytest.raises(ValueError):
        generate_scene(-1, *SMALL)


def test_segments_for_eval():
    scene = generate_scene(9, *SMALL)
    h, w = SMALL
    idx = segments_for_eval(scene, min_area_frac=0.01)
    assert set(idx.tolist()) == set(np.flatnonzero(scene.areas >= 0.01 * h * w).tolist())
    only_parts = segments_for_eval(scene, min_area_frac=0.0, levels=(1,))
    assert (scene.level[only_parts] == 1).all()


# --------------------------------------------------------------------------- content

def test_nested_structure_occurs():
    """Across 50 seeds: enough objects, parts and subparts, and pixels where one click is
    ambiguous between a whole object, a part and a subpart."""
    n_objects, with_parts, with_subparts, three_deep = [], 0, 0, 0
    for seed in range(50):
        scene = generate_scene(seed, 96, 96)
        n_objects.append(int((scene.level == 0).sum()))
        with_parts += bool((scene.level == 1).any())
        with_subparts += bool((scene.level == 2).any())
        for i in np.flatnonzero(scene.level == 2):
            part = scene.parent[i]
            whole = scene.parent[part]
            if (scene.masks[i] & scene.masks[part] & scene.masks[whole]).any():
                three_deep += 1
                break
    assert min(n_objects) >= 1 and max(n_objects) >= 5 and np.mean(n_objects) >= 3
    assert with_parts >= 25, with_parts
    assert with_subparts >= 10, with_subparts
    assert three_deep >= 10


def test_backgrounds_are_textured_and_objects_stand_out():
    flat, contrasts = 0, []
    for seed in range(40):
        scene = generate_scene(seed, 128, 128, effects=False)
        img = scene.image.astype(np.float32)
        covered = scene.masks[scene.level == 0].any(0)
        ring = cv2.dilate(covered.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        bg = img[~ring]
        if len(bg) > 500 and bg.std(0).max() < 2.0:
            flat += 1
        bg_mean = bg.mean(0) if len(bg) else img.reshape(-1, 3).mean(0)
        for i in np.flatnonzero(scene.level == 0):
            contrasts.append(np.linalg.norm(img[scene.masks[i]].mean(0) - bg_mean))
    assert flat <= 6, f"{flat} of 40 backgrounds are flat"  # flat_background_prob = 0.05
    assert np.median(contrasts) > 30


def test_sizes():
    for h, w in [(64, 64), (256, 256), (480, 640), (720, 1280)]:
        scene = generate_scene(21, h, w)
        assert scene.image.shape == (h, w, 3)
        assert len(scene) >= 1
        assert_valid(scene)


def test_generation_speed_sanity():
    """Loose bound (the machine may be busy): catches gross regressions, not small ones.
    Typical: ~12 ms per 640 x 480 scene on one core."""
    generate_scene(0, 480, 640)
    times = []
    for seed in range(8):
        t0 = time.perf_counter()
        generate_scene(seed, 480, 640)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.15


# --------------------------------------------------------------------------- seed split

def test_eval_seeds_disjoint_from_training():
    assert len(EVAL_SEEDS) == 200 and len(set(EVAL_SEEDS)) == 200
    assert not set(EVAL_SEEDS) & set(VAL_SEEDS)
    assert all(is_held_out(s) for s in EVAL_SEEDS + VAL_SEEDS)
    probe = list(range(0, 2000)) + list(range(HELD_OUT_START - 1000, HELD_OUT_START + 1000)) \
        + list(range(HELD_OUT_STOP - 1000, HELD_OUT_STOP + 1000)) + [10 ** 9, 2 ** 40]
    seeds = [train_seed(i) for i in probe]
    assert not any(is_held_out(s) for s in seeds)
    assert not set(seeds) & (set(EVAL_SEEDS) | set(VAL_SEEDS))
    assert len(set(seeds)) == len(set(probe)), "train_seed must be injective"
    assert train_seed(12) == 12
    with pytest.raises(ValueError):
        train_seed(-1)


# --------------------------------------------------------------------------- moving scenes

def centroids(scene: Scene) -> dict:
    out = {}
    for i in np.flatnonzero(scene.level == 0):
        ys, xs = np.nonzero(scene.masks[i])
        out[int(scene.object_id[i])] = (xs.mean(), ys.mean(), len(xs))
    return out


def test_sequence_objects_keep_ids_and_move():
    seq = SceneSequence(11, 240, 320)
    f0, f10 = seq.frame(0), seq.frame(10)
    assert_valid(f0)
    assert_valid(f10)
    assert f10.frame == 10
    c0, c10 = centroids(f0), centroids(f10)
    assert set(c0) <= set(range(seq.num_objects)) and set(c10) <= set(range(seq.num_objects))
    common = set(c0) & set(c10)
    assert len(common) >= max(1, len(c0) - 1), "objects lost their ids between frames"
    shifts = [np.hypot(c10[k][0] - c0[k][0], c10[k][1] - c0[k][1]) for k in common]
    assert max(shifts) > 2.0, "nothing moved"
    # Parts travel with their object: same segment ids where both frames show the object.
    for k in common:
        s0 = set(f0.segment_id[f0.object_id == k].tolist())
        s10 = set(f10.segment_id[f10.object_id == k].tolist())
        assert s0 & s10


def test_sequence_motion_is_smooth_and_stays_inside():
    h, w = 240, 320
    seq = SceneSequence(5, h, w)
    cfg = seq.config
    max_step = cfg.speed_range[1] * min(h, w) / 480.0 * np.sqrt(2) + 1e-6
    prev = seq.poses(0)
    for t in range(1, 400):
        cur = seq.poses(t)
        for (x0, y0, a0), (x1, y1, a1) in zip(prev, cur):
            assert np.hypot(x1 - x0, y1 - y0) <= max_step
            assert abs(a1 - a0) <= np.radians(cfg.max_turn_deg) + 1e-9
            assert 0 <= x1 <= w and 0 <= y1 <= h
        prev = cur


def test_sequence_frames_deterministic_random_access():
    seq = SceneSequence(8, *SMALL)
    late = seq.frame(37)
    for t in range(3):
        seq.frame(t)
    assert scenes_equal(seq.frame(37), late)
    assert scenes_equal(SceneSequence(8, *SMALL).frame(37), late)
    assert not np.array_equal(seq.frame(36).image, late.image)
    with pytest.raises(ValueError):
        seq.frame(-1)


def test_sequence_background_is_fixed():
    seq = SceneSequence(2, *SMALL, effects=False)
    a, b = seq.frame(0), seq.frame(25)
    near = np.zeros(SMALL, np.uint8)
    for scene in (a, b):
        near |= scene.masks[scene.level == 0].any(0).astype(np.uint8)
    near = cv2.dilate(near, np.ones((5, 5), np.uint8)).astype(bool)
    assert (~near).sum() > 0.2 * near.size
    assert np.array_equal(a.image[~near], b.image[~near])


def test_sequence_pickles():
    """DataLoader workers receive sequences by pickling; the copy renders the same frames."""
    import pickle
    seq = SceneSequence(6, 64, 80)
    copy = pickle.loads(pickle.dumps(seq))
    assert scenes_equal(seq.frame(12), copy.frame(12))
