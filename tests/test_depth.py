"""sam_ros.engine.depth: 3D objects from aligned depth, on rendered RGB-D scenes of known geometry.

Masks are made imperfect the way a segmenter's are (dilated by 2 px, so they bleed onto the wall
1 m behind the objects), depth has sensor noise, holes and flying pixels at its edges.
"""
import cv2
import numpy as np
import pytest

from sam_ros.data import depth_scenes
from sam_ros.engine import depth as D

EFFECTS = dict(noise_m=0.003, hole_fraction=0.05, flying_pixels=True)


def _frame(scene, **kw):
    return D.DepthFrame(D.depth_to_meters(scene.depth, scene.encoding), scene.intrinsics, **kw)


def _bleeding(mask, px=2):
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


@pytest.mark.parametrize("encoding", D.DEPTH_ENCODINGS)
def test_centroid_within_1cm_and_points_inside_the_object(encoding):
    scene = depth_scenes.tabletop(encoding=encoding, seed=1, **EFFECTS)
    frame = _frame(scene)
    for i, obj in enumerate(scene.objects):
        mask = _bleeding(scene.masks[i])
        out = D.object_from_mask(mask, frame)
        truth = scene.true_points(i).mean(axis=0)
        assert 0.9 < truth[2] < 1.3  # objects at about 1 m
        err = np.linalg.norm(out.centroid - truth)
        assert err < 0.01, f"object {i}: centroid {err * 100:.2f} cm off"
        # Every returned point lies on the object (within 4 sigma of the depth noise).
        assert out.points.dtype == np.float32 and out.points.shape[1] == 3
        assert obj.contains(out.points.astype(np.float64), tol=4 * EFFECTS["noise_m"]).all()
        assert 0.85 < out.valid_fraction < 1.0  # 5 % holes
        # What robustness buys: the same mask with no erosion or outlier rejection is off by more.
        naive = D.object_from_mask(mask, frame, erode_px=0, mad_k=1e9)
        assert np.linalg.norm(naive.centroid - truth) > 2 * err


def test_oriented_box_of_a_yawed_box_face():
    """A flat box face-on at 1 m, yawed 30 degrees: the box's long axis is the face's width."""
    box = depth_scenes.Box(center=(0.0, 0.0, 1.0), size=(0.30, 0.12, 0.01), yaw=np.radians(30))
    scene = depth_scenes.render([box], noise_m=0.001, seed=2)
    out = D.object_from_mask(scene.masks[0], _frame(scene), max_points=500)
    assert abs(out.box_extents[0] - 0.30) < 0.02 and abs(out.box_extents[1] - 0.12) < 0.02
    assert out.box_extents[2] < 0.03
    r = _rotation(out.box_orientation)
    assert abs(abs(r[:, 0] @ box.rotation()[:, 0]) - 1) < 0.01  # long axis = the box's x
    assert np.linalg.norm(out.box_center - np.asarray(box.center)) < 0.01
    assert len(out.points) == 500 and out.n_inliers > 500  # decimated


def _rotation(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_distortion_is_undistorted_per_pixel():
    """With a non-zero D, rays come from cv2.undistortPoints: a pixel re-projected with the
    distortion model lands where it was."""
    intr = D.CameraIntrinsics(320, 240, 280.0, 281.0, 161.0, 119.0, (-0.2, 0.05, 0.001, -0.001, 0.0), "plumb_bob")
    rx, ry = D.pixel_rays(intr)
    v, u = 30, 290
    k = np.array([[intr.fx, 0, intr.cx], [0, intr.fy, intr.cy], [0, 0, 1]])
    pix, _ = cv2.projectPoints(np.array([[rx[v, u], ry[v, u], 1.0]]), np.zeros(3), np.zeros(3), k,
                               np.asarray(intr.distortion))
    assert np.abs(pix.ravel() - (u, v)).max() < 0.05
    plain = D.pixel_rays(D.CameraIntrinsics(320, 240, 280.0, 281.0, 161.0, 119.0))
    assert abs(plain[0][v, u] - rx[v, u]) > 0.01  # the distortion matters at the border


def test_holes_mismatches_and_missing_intrinsics_are_clear_errors():
    scene = depth_scenes.tabletop(seed=3)
    frame = _frame(scene)
    mask = scene.masks[0]
    holes = frame.depth.copy()
    holes[mask] = np.nan
    with pytest.raises(D.DepthError, match=r"only 0 valid depth pixels inside the mask \(\d+ of \d+ are holes"):
        D.object_from_mask(mask, D.DepthFrame(holes, scene.intrinsics))
    half = frame.depth.copy()
    half[::2] = np.nan  # every other row missing: still measured
    out = D.object_from_mask(mask, D.DepthFrame(half, scene.intrinsics))
    assert np.linalg.norm(out.centroid - scene.true_points(0).mean(0)) < 0.01
    assert 0.4 < out.valid_fraction < 0.6
    with pytest.raises(D.DepthError, match="no CameraInfo"):
        D.object_from_mask(mask, D.DepthFrame(frame.depth, None))
    small = cv2.resize(frame.depth, (320, 240), interpolation=cv2.INTER_NEAREST)
    with pytest.raises(D.DepthError, match="depth image is 320 x 240 but the colour image is 640 x 480"):
        D.object_from_mask(mask, D.DepthFrame(small, scene.intrinsics))
    with pytest.raises(D.DepthError, match="CameraInfo is for 320 x 240"):
        D.object_from_mask(mask, D.DepthFrame(frame.depth, D.CameraIntrinsics(320, 240, 200, 200, 160, 120)))
    with pytest.raises(D.DepthError, match="mask is empty"):
        D.object_from_mask(np.zeros_like(mask), frame)
    with pytest.raises(D.DepthError, match="not calibrated"):
        D.CameraIntrinsics.from_k([0.0] * 9, 640, 480)
    with pytest.raises(D.DepthError, match="K needs 9"):
        D.CameraIntrinsics.from_k([1.0] * 4, 640, 480)
    with pytest.raises(D.DepthError, match="distortion model 'equidistant'"):
        D.CameraIntrinsics.from_k([500, 0, 320, 0, 500, 240, 0, 0, 1], 640, 480, [0.1, 0, 0, 0], "equidistant")
    with pytest.raises(D.DepthError, match="depth encoding 'mono8'"):
        D.depth_to_meters(np.zeros((4, 4), np.uint8), "mono8")
    with pytest.raises(D.DepthError, match="16UC1 depth must be uint16"):
        D.depth_to_meters(np.zeros((4, 4), np.float32), "16UC1")


def test_units_and_holes_of_both_encodings():
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    np.testing.assert_allclose(D.depth_to_meters(mm, "16UC1"), [[np.nan, 1.0], [1.5, 65.535]], rtol=1e-6)
    m = np.array([[0.0, np.nan], [np.inf, 0.75]], np.float32)
    out = D.depth_to_meters(m, "32FC1")
    assert np.isnan(out[0]).all() and np.isnan(out[1, 0]) and out[1, 1] == np.float32(0.75)


def test_pairer_matches_by_stamp_within_slop_and_counts():
    depth = np.ones((2, 2), np.float32)
    pairer = D.DepthPairer(slop=0.01, capacity=3)
    assert pairer.match(1.0) is None and pairer.unmatched == 1  # depth that never arrived
    for t in (1.000, 1.033, 1.066, 1.100):
        pairer.add(D.DepthFrame(depth, None, stamp=t))
    assert pairer.received == 4 and pairer.last_stamp == 1.100
    assert pairer.match(1.070).stamp == 1.066
    assert pairer.match(1.095).stamp == 1.100
    assert pairer.match(1.050) is None      # 17 ms from the nearest: outside the slop
    assert pairer.match(1.001) is None      # evicted: only the last 3 are kept
    assert (pairer.matched, pairer.unmatched) == (2, 3)
    with pytest.raises(ValueError):
        D.DepthPairer(slop=-1)


def test_large_masks_are_sampled_on_a_grid_with_the_same_result():
    box = depth_scenes.Box(center=(0.0, 0.0, 0.6), size=(0.4, 0.3, 0.1))
    scene = depth_scenes.render([box], noise_m=0.002, hole_fraction=0.05, seed=4)
    frame = _frame(scene)
    full = D.object_from_mask(scene.masks[0], frame, max_samples=0)
    grid = D.object_from_mask(scene.masks[0], frame)
    assert scene.masks[0].mean() > 0.25 and full.n_samples > 10 * grid.n_samples > 10 * 3000
    assert np.linalg.norm(grid.centroid - full.centroid) < 0.002
    assert np.abs(grid.box_extents - full.box_extents).max() < 0.01
    assert box.contains(grid.points.astype(np.float64), tol=0.01).all()
