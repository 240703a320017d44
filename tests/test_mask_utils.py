"""Mask utilities against hand-made cases, brute-force definitions and pycocotools."""
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from sam_ros.engine import mask_utils as mu

# pycocotools 2.0.11 calls np.array(copy=False) internally under numpy 2: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


# ---- stability score ----------------------------------------------------------------------------

def test_stability_score_hand_made():
    logits = torch.tensor([
        [[3.0, 0.5], [-0.5, -3.0]],     # > +1: 1 pixel, > -1: 3 pixels -> 1/3
        [[2.0, 2.0], [2.0, 2.0]],       # all confident -> 1
        [[-5.0, -5.0], [-5.0, -5.0]],   # empty at both thresholds -> 0 (an empty mask fails any filter, as in SAM)
        [[0.9, 0.9], [-0.9, -0.9]],     # nothing above +1, 4 above -1 -> 0
        [[1.0, 1.5], [-1.0, -2.0]],     # strict >: 1.0 not above +1, -1.0 not above -1 -> 1/2
    ])
    expected = torch.tensor([1 / 3, 1.0, 0.0, 0.0, 0.5])
    torch.testing.assert_close(mu.stability_score(logits, 0.0, 1.0), expected)
    # Threshold and offset shift the cut points.
    torch.testing.assert_close(mu.stability_score(logits[:1], 1.0, 0.5), torch.tensor([1 / 1]))  # >1.5 / >0.5
    torch.testing.assert_close(mu.stability_score(logits[:1], 0.0, 0.6), torch.tensor([1 / 3]))  # >.6 / >-.6


def test_stability_score_batch_dims_and_reference_definition():
    logits = torch.randn(2, 3, 40, 50, generator=torch.Generator().manual_seed(0)) * 3
    ours = mu.stability_score(logits, 0.0, 1.0)
    assert ours.shape == (2, 3) and ours.dtype == torch.float32
    hi, lo = logits > 1.0, logits > -1.0
    expected = (hi & lo).sum((-1, -2)).float() / lo.sum((-1, -2)).float()
    torch.testing.assert_close(ours, expected)


# ---- masks to boxes ------------------------------------------------------------------------------

def _brute_force_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [xs.min(), ys.min(), xs.max(), ys.max()]


def test_masks_to_boxes_vs_brute_force():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 5, 23, 31), dtype=bool)
    for idx in np.ndindex(3, 5):
        kind = rng.integers(0, 4)
        if kind == 0:
            continue  # empty
        if kind == 1:
            masks[idx][rng.integers(0, 23), rng.integers(0, 31)] = True  # one pixel
        else:
            masks[idx] = rng.random((23, 31)) < rng.uniform(0.001, 0.2)
    masks[0, 1, 0, 0] = True  # corner pixels
    masks[0, 2, 22, 30] = True
    masks[0, 3] = True  # full
    boxes = mu.masks_to_boxes(torch.from_numpy(masks))
    assert boxes.shape == (3, 5, 4)
    for idx in np.ndindex(3, 5):
        assert boxes[idx].tolist() == _brute_force_box(masks[idx]), idx
    assert boxes[0, 3].tolist() == [0, 0, 30, 22]


def test_masks_to_boxes_single_and_empty_inputs():
    m = torch.zeros(10, 12, dtype=torch.bool)
    m[2:5, 7:9] = True
    assert mu.masks_to_boxes(m).tolist() == [7, 2, 8, 4]
    assert mu.masks_to_boxes(torch.zeros(0, 10, 12, dtype=torch.bool)).shape == (0, 4)
    assert mu.masks_to_boxes(torch.zeros(4, 10, 12, dtype=torch.bool)).tolist() == [[0, 0, 0, 0]] * 4


# ---- NMS -----------------------------------------------------------------------------------------------

def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy_nms(boxes, scores, thr):
    """The definition: visit boxes by decreasing score (ties: lower index first); keep a box unless
    it overlaps an already kept box with IoU > thr."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def _random_boxes(rng, n, extent=100.0):
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(1, extent / 3, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 0.95])
def test_box_nms_vs_greedy_definition(seed, thr):
    rng = np.random.default_rng(seed)
    n = 60
    boxes = _random_boxes(rng, n)
    # Jittered near-copies of the first 30 boxes so that IoUs cover the whole range (0, 1).
    boxes[30:] = boxes[:30] + rng.normal(0, 1, (30, 1)) * rng.uniform(0.05, 3, (30, 4))
    boxes[30:, 2:] = np.maximum(boxes[30:, 2:], boxes[30:, :2] + 0.5)
    scores = rng.random(n)
    scores[5] = scores[6]  # a tie
    keep = mu.box_nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), thr)
    assert keep.dtype == torch.int64
    expected = _greedy_nms(boxes.astype(np.float32).astype(np.float64), scores.astype(np.float32).tolist(), thr)
    assert keep.tolist() == expected
    assert 1 < len(expected) < n  # the case is not trivial


def test_box_nms_ties_and_duplicates():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = torch.tensor([0.5, 0.9, 0.5, 0.9])
    # 1 and 3 tie at 0.9: the earlier (1) wins and suppresses its duplicates 0 and 3.
    assert mu.box_nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert mu.box_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_vs_per_category_greedy(seed):
    rng = np.random.default_rng(100 + seed)
    n = 80
    boxes = _random_boxes(rng, n, extent=60.0)
    scores = rng.random(n)
    cats = rng.integers(0, 4, n)
    keep = mu.batched_nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                          torch.tensor(cats), 0.4)
    b32 = boxes.astype(np.float32).astype(np.float64)
    s32 = scores.astype(np.float32).tolist()
    expected = []
    for c in np.unique(cats):
        idx = np.flatnonzero(cats == c)
        expected += [int(idx[k]) for k in _greedy_nms(b32[idx], [s32[i] for i in idx], 0.4)]
    # Kept set as per category; order: by decreasing score.
    assert sorted(keep.tolist()) == sorted(expected)
    kept_scores = [s32[i] for i in keep.tolist()]
    assert kept_scores == sorted(kept_scores, reverse=True)
    # Categories matter: plain NMS over all boxes suppresses more.
    assert len(mu.box_nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                          0.4)) < len(keep)


# ---- RLE -------------------------------------------------------------------------------------------------

def _rle_cases():
    rng = np.random.default_rng(7)
    cases = {
        "zeros": np.zeros((7, 9), bool),
        "ones": np.ones((7, 9), bool),
        "first_pixel": np.zeros((7, 9), bool),
        "last_pixel": np.zeros((7, 9), bool),
        "one_row": rng.random((1, 40)) < 0.5,
        "one_col": rng.random((40, 1)) < 0.5,
        "sparse": rng.random((37, 53)) < 0.02,
        "dense": rng.random((37, 53)) < 0.97,
        "half": rng.random((64, 48)) < 0.5,
        "blocks": np.kron(rng.random((8, 6)) < 0.5, np.ones((40, 50), bool)),  # long runs (> 2^5)
    }
    cases["first_pixel"][0, 0] = True
    cases["last_pixel"][-1, -1] = True
    return cases


RLE_CASES = _rle_cases()


@pytest.mark.parametrize("name", list(RLE_CASES))
def test_rle_round_trip_and_area(name):
    mask = RLE_CASES[name]
    rle = mu.mask_to_rle(mask)
    assert rle["size"] == list(mask.shape)
    assert sum(rle["counts"]) == mask.size
    assert all(c > 0 for c in rle["counts"][1:])
    assert (rle["counts"][0] == 0) == bool(mask.flat[0])  # counts start with a run of zeros
    np.testing.assert_array_equal(mu.rle_to_mask(rle), mask)
    assert mu.area_from_rle(rle) == int(mask.sum())


@pytest.mark.parametrize("name", list(RLE_CASES))
def test_rle_matches_pycocotools(name):
    mask = RLE_CASES[name]
    h, w = mask.shape
    coco = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    ours = mu.encode_rle(mu.mask_to_rle(mask))
    assert ours["size"] == [h, w] == list(coco["size"])
    assert ours["counts"] == coco["counts"].decode("ascii")
    # pycocotools' own conversion of our uncompressed counts agrees too.
    assert coco_mask.frPyObjects(mu.mask_to_rle(mask), h, w)["counts"] == coco["counts"]
    # Decoding compressed strings (str and bytes) written by pycocotools.
    np.testing.assert_array_equal(mu.rle_to_mask(coco), mask)
    np.testing.assert_array_equal(mu.rle_to_mask({"size": [h, w], "counts": coco["counts"].decode()}), mask)
    np.testing.assert_array_equal(coco_mask.decode(ours).astype(bool), mask)
    assert mu.area_from_rle(ours) == int(coco_mask.area(coco)) == int(mask.sum())


def test_rle_to_mask_rejects_wrong_size():
    with pytest.raises(ValueError, match="cover"):
        mu.rle_to_mask({"size": [3, 3], "counts": [4, 4]})


# ---- small regions ----------------------------------------------------------------------------------

def _scene():
    """A 20x20 square with a 2x2 hole, a 3-pixel island, and a diagonal 2-pixel island."""
    m = np.zeros((40, 40), bool)
    m[5:25, 5:25] = True
    m[10:12, 10:12] = False        # hole, area 4
    m[30, 30:33] = True            # island, area 3
    m[2, 35] = m[3, 36] = True     # diagonal pair: one region with 8-connectivity, area 2
    return m


def test_fill_small_holes():
    m = _scene()
    out, changed = mu.remove_small_regions(m, 5, "holes")
    assert changed
    expected = m.copy()
    expected[10:12, 10:12] = True
    np.testing.assert_array_equal(out, expected)
    # The background (area > threshold) is never filled, even with a large threshold on holes.
    out, changed = mu.remove_small_regions(m, 100, "holes")
    assert changed and out.sum() == m.sum() + 4


def test_remove_small_islands():
    m = _scene()
    out, changed = mu.remove_small_regions(m, 3, "islands")  # only the diagonal pair (2 < 3) goes
    assert changed
    expected = m.copy()
    expected[2, 35] = expected[3, 36] = False
    np.testing.assert_array_equal(out, expected)
    out, changed = mu.remove_small_regions(m, 10, "islands")  # both small islands go, hole stays
    expected[30, 30:33] = False
    np.testing.assert_array_equal(out, expected)
    assert not out[10, 10]


def test_small_regions_unchanged_and_all_small():
    m = _scene()
    out, changed = mu.remove_small_regions(m, 2, "islands")
    assert not changed and out is m
    out, changed = mu.remove_small_regions(m, 4, "holes")  # hole area 4 is not < 4
    assert not changed
    # Every island below the threshold: the largest is kept.
    out, changed = mu.remove_small_regions(m, 10_000, "islands")
    assert changed
    expected = np.zeros_like(m)
    expected[5:25, 5:25] = True
    expected[10:12, 10:12] = False
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="mode"):
        mu.remove_small_regions(m, 3, "blobs")
