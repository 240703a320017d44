"""Tracking without ROS: optical-flow propagation on hand-made motion, and the streaming
session's targets on scripted sequences with ground truth (motion, a full occlusion, leaving the
image and coming back), on the real default model."""
import numpy as np
import pytest
import cv2

from sam_ros.data.scenes import SceneSequence
from sam_ros.data.tracking_scenes import TrackingSequence
from sam_ros.engine.factory import create_predictor
from sam_ros.engine.prompts import InputError, Prompt
from sam_ros.engine.session import SessionConfig, StreamingSession
from sam_ros.engine.tracking.flow import AnchoredPoints, FlowFrame, sample_points, warp_mask
from sam_ros.engine.tracking.appearance import colour_histogram
from sam_ros.engine.tracking.target import Target, TargetState
from sam_ros.engine.tracking.tracker import PromptTracker, TrackingConfig


def _iou(a, b):
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else 1.0


def _textured(h=240, w=320, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(base, (0, 0), 1.0)


@pytest.mark.parametrize("shift,angle,scale", [((6.0, -4.0), 0.0, 1.0), ((3.0, 2.0), 4.0, 1.0), ((0.0, 0.0), 0.0, 1.08)])
def test_flow_recovers_a_known_similarity_motion(shift, angle, scale):
    """A textured patch moved by a known similarity transform: the estimated transform moves the
    mask onto the true moved mask."""
    bg = _textured(seed=1)
    obj = _textured(seed=2)
    h, w = bg.shape
    mask = np.zeros((h, w), bool)
    cv2.circle(mask.view(np.uint8), (150, 120), 45, 1, -1)
    img0 = np.where(mask, obj, bg).astype(np.uint8)
    m = cv2.getRotationMatrix2D((150, 120), angle, scale)
    m[:, 2] += shift
    moved_obj = cv2.warpAffine(obj, m, (w, h))
    moved_mask = cv2.warpAffine(mask.view(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST).view(bool)
    img1 = np.where(moved_mask, moved_obj, bg).astype(np.uint8)
    f0, f1 = FlowFrame(0, img0), FlowFrame(1, img1)
    x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
    pts = sample_points(mask, (x, y, bw, bh), img0)
    assert len(pts) >= 16
    motion = AnchoredPoints(pts, img0).advance(f0, f1)
    assert motion.matrix is not None and motion.reliability > 0.5
    # Where the transform takes the object's centre and its rim (1 px: sub-pixel flow, LK's accuracy).
    probe = np.array([[150, 120], [195, 120], [150, 75], [105, 120]], np.float64)
    np.testing.assert_allclose(probe @ motion.matrix[:, :2].T + motion.matrix[:, 2], probe @ m[:, :2].T + m[:, 2],
                               atol=1.0)
    assert _iou(warp_mask(mask, (x, y, bw, bh), motion.matrix), moved_mask) > 0.95


def test_flow_reports_unreliable_motion_when_the_object_vanishes():
    bg = _textured(seed=3)
    obj = _textured(seed=4)
    mask = np.zeros(bg.shape, bool)
    cv2.rectangle(mask.view(np.uint8), (100, 80), (180, 160), 1, -1)
    img0 = np.where(mask, obj, bg).astype(np.uint8)
    pts = sample_points(mask, cv2.boundingRect(mask.view(np.uint8)), img0)
    motion = AnchoredPoints(pts, img0).advance(FlowFrame(0, img0), FlowFrame(1, _textured(seed=9)))
    assert motion.reliability < 0.2


def test_flat_object_is_followed_by_its_outline_over_many_frames():
    """An untextured polygon (only its outline has structure: Lucas-Kanade slides along edges)
    on a smooth background, moving 2.5 px a frame under sensor noise: the anchored fit keeps
    the propagated mask on it for 30 frames (frame-to-frame re-sampling drifted off it)."""
    rng = np.random.default_rng(5)
    bg = cv2.GaussianBlur(_textured(seed=6), (0, 0), 12.0)
    h, w = bg.shape
    poly = np.array([[-40, -30], [35, -38], [45, 10], [0, 42], [-38, 25]], np.float64)
    start = np.array([110.0, 110.0])
    velocity = np.array([2.5, 1.0])

    def render(t):
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(poly + start + t * velocity).astype(np.int32)], 1)
        img = np.where(mask.astype(bool), 200, bg).astype(np.float64) + rng.normal(0, 3, (h, w))
        return np.clip(img, 0, 255).astype(np.uint8), mask.astype(bool)

    img, mask0 = render(0)
    bbox = cv2.boundingRect(mask0.view(np.uint8))
    track = AnchoredPoints(sample_points(mask0, bbox, img), img)
    prev, m = FlowFrame(0, img), np.eye(2, 3)
    for t in range(1, 31):
        img, truth = render(t)
        cur = FlowFrame(t, img)
        motion = track.advance(prev, cur, m)
        assert motion.matrix is not None, f"frame {t}: the points were lost"
        m, prev = motion.matrix, cur
    assert _iou(warp_mask(mask0, bbox, m), truth) > 0.9
    np.testing.assert_allclose(m[:, 2], 30 * velocity, atol=2.0)


@pytest.fixture(scope="module")
def predictor():
    return create_predictor()


def _run(predictor, scenario, seed, every=4, start="box", size=(240, 320)):
    """Track the scenario's target with the session (encoding every `every`-th frame); per frame
    (ground truth, result object)."""
    seq = TrackingSequence(scenario, seed, height=size[0], width=size[1], num_frames=150)
    t0 = seq.first_visible()
    session = StreamingSession(predictor, SessionConfig(encode_every=every))
    scene = seq.frame(t0)
    session.step(scene.image, stamp=t0 / 30, encode=True)
    gt = seq.target_mask(scene)
    x, y, w, h = cv2.boundingRect(gt.view(np.uint8))
    if start == "box":
        first = session.add_target("obj", Prompt(box=[x, y, x + w, y + h], multimask=False))
    else:
        ys, xs = np.nonzero(gt)
        first = session.add_target("obj", Prompt(np.array([[xs.mean(), ys.mean()]]), np.array([1])))
    assert first.state == "tracking" and first.mask is not None
    out = []
    for t in range(t0 + 1, seq.num_frames):
        scene = seq.frame(t)
        res = session.step(scene.image, stamp=t / 30)
        assert len(res.objects) == 1 and res.objects[0].target_id == "obj"   # a result on every frame
        out.append((seq.target_mask(scene), res.objects[0], res.encoded))
    return out


def _j(frames):
    return float(np.mean([(_iou(o.mask, gt) if o.mask is not None else 0.0) if gt is not None
                          else float(o.mask is None) for gt, o, _ in frames]))


def test_target_follows_a_moving_object_on_every_frame(predictor):
    frames = _run(predictor, "translate", 7000)
    assert _j(frames) > 0.75
    propagated = [o for _, o, enc in frames if not enc]
    assert propagated and all(o.propagated and o.age_frames > 0 for o in propagated)
    assert all(not o.propagated and o.age_frames == 0 for _, o, enc in frames if enc)


def test_full_occlusion_keeps_the_id_is_reported_and_reacquired(predictor):
    frames = _run(predictor, "occlusion", 7000, size=(480, 640))
    states = [o.state for _, o, _ in frames]
    hidden = [i for i, (gt, _, _) in enumerate(frames) if gt is None]
    assert hidden, "the scenario hides the target"
    # While hidden: no mask is published (but for slivers at the pillar's edges, at most 2 frames),
    # and it is reported occluded (or lost).
    assert sum(frames[i][1].mask is not None for i in hidden) <= 2
    assert {"occluded"} <= set(states[hidden[0]:hidden[-1] + 1])
    # It comes back with the same id, re-acquired (the goal is within 10 frames of
    # reappearing: not met yet on every sequence, see benchmarks/bench_tracking.py).
    after = hidden[-1] + 1
    back = next(i for i in range(after, len(frames)) if states[i] in ("reacquired", "tracking"))
    assert "reacquired" in states[after:back + 1] and back - after <= 25
    assert np.mean([_iou(o.mask, gt) for gt, o, _ in frames[back + 3:] if o.mask is not None]) > 0.6


def test_target_that_leaves_the_image_is_not_published_and_comes_back(predictor):
    frames = _run(predictor, "exit_return", 7000, start="point", size=(480, 640))
    gone = [i for i, (gt, _, _) in enumerate(frames) if gt is None]
    assert gone
    assert sum(frames[i][1].mask is not None for i in gone) <= 2   # (the last edge frames)
    back = next(i for i in range(gone[-1], len(frames)) if frames[i][1].state == "reacquired")
    assert back - (gone[-1] + 1) <= 10   # the goal: within 10 frames of reappearing
    assert _iou(frames[back][1].mask, frames[back][0]) > 0.5   # on the target


def test_box_target_grows_back_after_a_partial_occlusion(predictor):
    """The demo's footage played backwards and forwards (as its camera does): the striped object
    slides behind a star and the image border until a tenth of it shows, then comes out again.
    The target must grow back to the whole object. Before the tracker's regrowth the flow read
    the loss of area as shrinking, and box and mask grew back slowly (mean IoU over the last 30
    frames 0.62; 0.86 with it; the demo's run of the same object: 0.21 then 0.74)."""
    seq = SceneSequence(7, height=480, width=640)
    order = list(range(92, 9, -1)) + list(range(11, 93))
    session = StreamingSession(predictor, SessionConfig(encode_every=6))

    def truth(scene):
        return scene.masks[int(np.flatnonzero(scene.segment_id == 48)[0])]

    scene = seq.frame(order[0])
    session.step(scene.image, stamp=0.0, encode=True)
    x, y, w, h = cv2.boundingRect(truth(scene).view(np.uint8))
    first = session.add_target("striped", Prompt(box=[x, y, x + w, y + h], multimask=False))
    assert _iou(first.mask, truth(scene)) > 0.9
    ious, hidden_share = [], []
    for i, t in enumerate(order[1:], 1):
        scene = seq.frame(t)
        obj = session.step(scene.image, stamp=i / 30).objects[0]
        g = truth(scene)
        hidden_share.append(1 - g.sum() / 21000)
        ious.append(_iou(obj.mask, g) if obj.mask is not None else 0.0)
    assert max(hidden_share) > 0.85   # the footage does hide most of it
    assert np.mean(ious[-30:]) > 0.8, np.mean(ious[-30:])


def test_lost_target_ends_after_lost_s_and_is_reported_once(predictor):
    seq = TrackingSequence("translate", 7002, height=240, width=320)
    session = StreamingSession(predictor, SessionConfig(encode_every=2))
    session.tracker.config.occluded_s, session.tracker.config.lost_s = 0.1, 0.3
    scene = seq.frame(0)
    session.step(scene.image, stamp=0.0, encode=True)
    gt = seq.target_mask(scene)
    x, y, w, h = cv2.boundingRect(gt.view(np.uint8))
    session.add_target("obj", Prompt(box=[x, y, x + w, y + h], multimask=False))
    blank = np.full_like(scene.image, 127)   # the object (and everything) is gone
    states = [o.state for t in range(1, 20) for o in session.step(blank, stamp=t / 30).objects]
    assert states[0] in ("tracking", "occluded")
    assert "occluded" in states and "lost" in states
    assert states.count("ended") == 1 and states[-1] == "ended"
    assert session.targets() == []


def test_bad_frames_and_prompts_raise_clear_errors(predictor):
    session = StreamingSession(predictor)
    with pytest.raises(InputError, match="no encoded frame"):
        session.add_target("a", Prompt(box=[0, 0, 10, 10]))
    with pytest.raises(InputError, match="H x W x 3 uint8"):
        session.step(np.zeros((0, 10, 3), np.uint8))
    img = np.zeros((120, 160, 3), np.uint8)
    session.step(img, encode=True)
    with pytest.raises(InputError, match="outside"):
        session.add_target("a", Prompt(np.array([[500.0, 10.0]]), np.array([1])))
    with pytest.raises(InputError, match="NaN"):
        session.add_target("a", Prompt(np.array([[np.nan, 10.0]]), np.array([1])))
    assert session.targets() == []


def _target_with_colour(name, rgb, mask):
    t = Target(name, Prompt(box=[0, 0, 1, 1], multimask=False))
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    t.appearance.update(None, colour_histogram(rgb, mask, (x, y, w, h)), float(mask.sum()), 1.0)
    t.mask = mask
    return t


def test_two_targets_decoded_onto_one_object_split_it_by_appearance():
    """A red and a blue square side by side; the blue target's decode spreads over the red square
    too (a look-alike neighbour in the model's eyes). The shared pixels go to the target they look
    like: the red target keeps its square, the blue one keeps only its own; a target left with
    nothing of its own is rejected; a small part inside a whole (IoU under exclusive_iou) is left
    alone."""
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[20:80, 20:80] = (220, 30, 30)
    rgb[20:80, 120:180] = (30, 30, 220)
    red, blue = np.zeros((100, 200), bool), np.zeros((100, 200), bool)
    red[20:80, 20:80] = True
    blue[20:80, 120:180] = True
    tracker = PromptTracker()
    t_red, t_blue = _target_with_colour("red", rgb, red), _target_with_colour("blue", rgb, blue)
    entries = [[t_blue, red | blue, True], [t_red, red.copy(), True]]
    tracker._exclusive(entries, rgb, None)
    assert entries[1][2] and np.array_equal(entries[1][1], red)          # red keeps its square
    assert entries[0][2] and np.array_equal(entries[0][1], blue)         # blue keeps only its own
    # A blue target decoded onto the red square alone: nothing of it is left, it is rejected.
    entries = [[t_blue, red.copy(), True], [t_red, red.copy(), True]]
    tracker._exclusive(entries, rgb, None)
    assert not entries[0][2] and entries[1][2] and np.array_equal(entries[1][1], red)
    # A part (a tenth of the red square) tracked beside its whole: they keep sharing.
    part = np.zeros_like(red)
    part[20:26, 20:80] = True
    t_part = _target_with_colour("part", rgb, part)
    entries = [[t_part, part.copy(), True], [t_red, red.copy(), True]]
    tracker._exclusive(entries, rgb, None)
    assert entries[0][2] and np.array_equal(entries[0][1], part) and np.array_equal(entries[1][1], red)


def _started(name, rgb, mask, key=1):
    """A target just started on frame `key` with `mask` as its decode (appearance from it)."""
    t = _target_with_colour(name, rgb, mask)
    t.key = t.decoded_key = key
    t.decodes = 1
    t.low_res = np.zeros((1, 8, 8), np.float32)
    t.iou, t.stability = 0.9, 0.9
    return t


def test_targets_started_on_one_object_are_separated_whatever_their_order():
    """A detector's box around a partly hidden red object also holds the blue object in front of
    it, and its decode takes both; the blue object's own target starts on the same frame. The
    shared pixels (the blue object) go to the target whose other pixels they look like: the
    blue target keeps the blue object, the red one starts again from the red pixels alone, its
    appearance now red; the same whichever target was started first. A target that is all
    shared pixels but a speck keeps its mask; on another frame, nothing is done."""
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[20:80, 20:110] = (220, 30, 30)
    rgb[30:90, 90:170] = (30, 30, 220)   # in front of the red object's right end
    blue = np.zeros((100, 200), bool)
    blue[30:90, 90:170] = True
    red = np.zeros((100, 200), bool)
    red[20:80, 20:110] = True
    red &= ~blue
    flow = FlowFrame.from_rgb(1, rgb)
    for order in ("red first", "blue first"):
        t_red, t_blue = _started("red", rgb, red | blue), _started("blue", rgb, blue.copy())
        started, others = ([t_blue], [t_red]) if order == "red first" else ([t_red], [t_blue])
        PromptTracker().separate_starts(started, started + others, rgb, flow, None, 0.0)
        assert np.array_equal(t_red.mask, red), order
        assert np.array_equal(t_blue.mask, blue), order
        assert t_red.decodes == 1 and t_red.track is not None and t_red.box is not None
        ref = colour_histogram(rgb, red, cv2.boundingRect(red.view(np.uint8)))
        assert np.allclose(t_red.appearance.histogram, ref)
    # Mostly hidden: what shows of the red object is 7% of its target's first mask; it is still
    # cut from the blue object (a tenth-of-its-mask rule kept the occluder whole there).
    rgb2 = np.zeros((100, 200, 3), np.uint8)
    rgb2[30:90, 84:90] = (220, 30, 30)
    rgb2[blue] = (30, 30, 220)
    shows = np.zeros_like(blue)
    shows[30:90, 84:90] = True
    t_red, t_blue = _started("red", rgb2, shows | blue), _started("blue", rgb2, blue.copy())
    PromptTracker().separate_starts([t_red], [t_blue, t_red], rgb2, FlowFrame.from_rgb(1, rgb2), None, 0.0)
    assert shows.sum() < 0.1 * (shows | blue).sum()
    assert np.array_equal(t_red.mask, shows) and np.array_equal(t_blue.mask, blue)
    # All but a speck shared (under 0.2% of the image left): nothing is cut.
    sliver = blue.copy()
    sliver[30:60, 90] = False
    t_a, t_b = _started("a", rgb, blue.copy()), _started("b", rgb, sliver)
    PromptTracker().separate_starts([t_b], [t_a, t_b], rgb, flow, None, 0.0)
    assert np.array_equal(t_a.mask, blue) and np.array_equal(t_b.mask, sliver)
    # The other target's mask is on an older frame: not compared.
    t_red, t_blue = _started("red", rgb, red | blue, key=0), _started("blue", rgb, blue.copy())
    PromptTracker().separate_starts([t_blue], [t_red, t_blue], rgb, flow, None, 0.0)
    assert np.array_equal(t_red.mask, red | blue)


def test_other_targets_inside_a_targets_box_are_background_points_of_its_prompt():
    """A re-segmentation prompt carries, besides the target's own inmost point, a background
    point on each other present target's mask that lies inside its box, away from its own mask
    (beyond the `neighbour_gap` band): where the model would merge two objects, the neighbour's
    pixels are named as not the target. A neighbour outside the box, one only touching the
    target's outline, and an absent one add nothing."""
    rgb = np.zeros((120, 200, 3), np.uint8)
    own = np.zeros((120, 200), bool)
    own[30:90, 20:100] = True
    inside = np.zeros_like(own)
    inside[40:80, 110:150] = True            # in the target's box, clear of its mask
    far = np.zeros_like(own)
    far[10:50, 170:195] = True               # outside the box
    touching = np.zeros_like(own)
    touching[30:90, 100:103] = True          # along the target's outline, within the band
    t = _started("t", rgb, own)
    t.bbox = cv2.boundingRect(own.view(np.uint8))
    t.box = np.array([15.0, 25.0, 160.0, 95.0])
    others = [_started(n, rgb, m) for n, m in (("inside", inside), ("far", far), ("touching", touching))]
    tracker = PromptTracker(TrackingConfig(neighbour_points=2, neighbour_gap=0.2))
    (_, prompt, kind), = [a for a in tracker.prompts([t] + others, (120, 200), None) if a[0] is t]
    assert kind == "track" and prompt.box is not None
    background = prompt.points[prompt.labels == 0]
    assert len(background) == 1 and inside[int(background[0][1]), int(background[0][0])]
    foreground = prompt.points[prompt.labels == 1]
    assert len(foreground) == 1 and own[int(foreground[0][1]), int(foreground[0][0])]
    # The neighbour gone (occluded): no background point for it.
    others[0].state = TargetState.OCCLUDED
    (_, prompt, _), = [a for a in tracker.prompts([t] + others, (120, 200), None) if a[0] is t and a[2] == "track"]
    assert not (prompt.labels == 0).any()
    # Off (the default): the prompt is the point and the box alone.
    others[0].state = TargetState.TRACKING
    (_, prompt, _), = [a for a in PromptTracker().prompts([t] + others, (120, 200), None) if a[0] is t and a[2] == "track"]
    assert list(prompt.labels) == [1]


def test_box_targets_started_together_start_on_their_own_objects(predictor):
    """Every object of the first frame as a box target, as the several-targets benchmark starts
    them: where a box around a partly hidden object holds its occluder, the model's mask for it
    covered the occluder (rotate_scale 7000: IoU 0.49 with the occluder, 0.21 with its own
    object; occlusion 7001: 0.28 / 0.44, the occluder's own target cut to 0.45) and that target
    later switched to the occluder. Each target's first mask now covers its own object better
    than any other (at most IoU 0.15 with another), and the occluders' targets keep theirs."""
    for scenario, seed in (("rotate_scale", 7000), ("occlusion", 7001)):
        scene = TrackingSequence(scenario, seed, height=480, width=640, num_frames=2).frame(0)
        session = StreamingSession(predictor, SessionConfig(encode_every=3))
        session.step(scene.image, stamp=0.0, encode=True)
        objects = {}
        for o in np.unique(scene.object_id[scene.level == 0]):
            m = scene.masks[np.flatnonzero((scene.object_id == o) & (scene.level == 0))[0]]
            if np.count_nonzero(m) >= 0.002 * m.size:
                objects[int(o)] = m
        for o, m in objects.items():
            x, y, w, h = cv2.boundingRect(m.view(np.uint8))
            session.add_target(f"obj{o}", Prompt(box=[x, y, x + w, y + h], multimask=False))
        for t in session.targets():
            own_id = int(t.target_id[3:])
            ious = {k: _iou(t.mask, g) for k, g in objects.items()}
            assert max(ious, key=ious.get) == own_id, (scenario, t.target_id, ious)
            others = max(v for k, v in ious.items() if k != own_id)
            assert ious[own_id] >= 0.15 and others <= 0.15, (scenario, t.target_id, ious)
        # the occluders' targets keep their whole masks (0.70 each, as without the other target)
        occluder = {"rotate_scale": "obj4", "occlusion": "obj1"}[scenario]
        t = next(t for t in session.targets() if t.target_id == occluder)
        assert _iou(t.mask, objects[int(occluder[3:])]) >= 0.65


def test_an_absent_target_is_not_reacquired_onto_what_looks_more_like_another_absent_one(predictor):
    """Two targets are absent; a search decode for target A finds a mask that passes as A
    (colour the same, embedding similarity 0.8) but that is B's object (similarity 1.0, B
    absent too): A is not re-acquired onto it. The same decode with no other absent target
    re-acquires A (and B itself would be: it claims it best)."""
    from sam_ros.engine.predictor import MaskPrediction
    from sam_ros.engine.tracking import appearance as app
    rgb = np.full((240, 320, 3), 90, np.uint8)
    rgb[60:160, 40:140] = (200, 40, 40)
    rgb[70:170, 190:290] = (40, 40, 200)
    obj_b = np.zeros((240, 320), bool)
    obj_b[70:170, 190:290] = True
    emb = predictor.encode(rgb)
    feat_b = app.pooled_feature(emb, obj_b)
    orth = np.random.default_rng(0).standard_normal(feat_b.shape)
    orth -= (orth @ feat_b) * feat_b
    orth /= np.linalg.norm(orth)
    hist_b = colour_histogram(rgb, obj_b, cv2.boundingRect(obj_b.view(np.uint8)))
    flow = FlowFrame.from_rgb(5, rgb)

    def absent(name, feature):
        t = Target(name, Prompt(box=[0, 0, 10, 10], multimask=False))
        t.appearance.update(feature, hist_b, float(obj_b.sum()), 1.0)
        t.state, t.absent_since, t.size = TargetState.LOST, 0.0, np.array([100.0, 100.0])
        return t

    def found(mask, iou):
        return MaskPrediction(mask[None], np.array([iou], np.float32), np.zeros((1, 8, 8), np.float32),
                              np.array([0.95], np.float32))

    search = Prompt(np.array([[240.0, 120.0]]), np.array([1]), multimask=False)
    for rival_absent in (True, False):
        t_a, t_b = absent("a", 0.8 * feat_b + 0.6 * orth), absent("b", feat_b)
        items = [(t_a, search, "search")] + ([(t_b, search, "search")] if rival_absent else [])
        preds = [found(obj_b, 0.9)] + ([found(np.zeros_like(obj_b), 0.9)] if rival_absent else [])
        PromptTracker().correct(items, preds, rgb, flow, emb, 1.0)
        assert (t_a.state == TargetState.REACQUIRED) == (not rival_absent), rival_absent
    t_a, t_b = absent("a", 0.8 * feat_b + 0.6 * orth), absent("b", feat_b)
    PromptTracker().correct([(t_a, search, "search"), (t_b, search, "search")],
                            [found(np.zeros_like(obj_b), 0.9), found(obj_b, 0.9)], rgb, flow, emb, 1.0)
    assert t_b.state == TargetState.REACQUIRED and t_a.state == TargetState.LOST


def _decode(mask, iou=0.9):
    from sam_ros.engine.predictor import MaskPrediction
    return MaskPrediction(mask[None], np.array([iou], np.float32), np.zeros((1, 8, 8), np.float32),
                          np.array([0.95], np.float32))


def test_a_look_alike_far_from_where_the_target_went_needs_closer_colours(predictor):
    """An occluded target (gone 0.5 s, expected at the left of the image) and a search decode of
    an object whose colours are three quarters the target's (similarity 0.75: above
    reacquire_colour, below it + far_colour): near where the target was expected it is
    re-acquired, 380 px away it is not; the same object in the target's own colours is
    re-acquired there too."""
    from sam_ros.engine.tracking import appearance as app
    rgb = np.full((480, 640, 3), 90, np.uint8)
    target = np.zeros((480, 640), bool)
    target[170:270, 50:150] = True
    rgb[target] = (200, 40, 40)
    hist = colour_histogram(rgb, target, cv2.boundingRect(target.view(np.uint8)))

    def scene(x0, pure):
        img = np.full((480, 640, 3), 90, np.uint8)
        m = np.zeros((480, 640), bool)
        m[170:270, x0:x0 + 100] = True
        img[m] = (200, 40, 40)
        if not pure:
            img[245:270, x0:x0 + 100] = (40, 40, 200)   # a quarter in another colour
        return img, m

    tracker = PromptTracker()
    assert tracker.config.reacquire_colour < 0.75 < tracker.config.reacquire_colour + tracker.config.far_colour
    for x0, pure, expected in ((60, False, True), (440, False, False), (440, True, True)):
        img, m = scene(x0, pure)
        emb = predictor.encode(img)
        assert abs(app.histogram_similarity(hist, colour_histogram(img, m, cv2.boundingRect(m.view(np.uint8))))
                   - (1.0 if pure else 0.75)) < 0.02
        t = Target("t", Prompt(box=[50, 170, 150, 270], multimask=False))
        t.appearance.update(app.pooled_feature(emb, m), hist, float(m.sum()), 1.0)
        t.state, t.absent_since, t.stamp = TargetState.OCCLUDED, 0.0, 0.5
        t.center, t.size, t.image_size = np.array([100.0, 220.0]), np.array([100.0, 100.0]), (480, 640)
        search = Prompt(np.array([[x0 + 50.0, 220.0]]), np.array([1]), multimask=False)
        tracker.correct([(t, search, "search")], [_decode(m)], img, FlowFrame.from_rgb(1, img), emb, 0.5)
        assert (t.state == TargetState.REACQUIRED) == expected, (x0, pure)


def test_a_search_that_showed_another_object_is_not_repeated_there_for_a_while(predictor):
    """A lost red target whose embedding feature is that of a green object (beside it a blue
    one): the first search tries the best-looking object; its decode fails on colour; for
    distractor_s no candidate point is tried on that object's cells, after it the object is tried
    again."""
    from sam_ros.engine.tracking import appearance as app
    rgb = np.full((480, 640, 3), 90, np.uint8)
    green, blue = np.zeros((480, 640), bool), np.zeros((480, 640), bool)
    green[100:220, 380:520] = True
    blue[300:420, 80:200] = True
    rgb[green], rgb[blue] = (40, 200, 40), (40, 40, 200)
    emb = predictor.encode(rgb)
    red = np.full((480, 640, 3), (200, 40, 40), np.uint8)
    t = Target("t", Prompt(box=[0, 0, 10, 10], multimask=False))
    t.appearance.update(app.pooled_feature(emb, green), colour_histogram(red, blue, (80, 300, 120, 120)),
                        float(green.sum()), 1.0)
    t.state, t.absent_since, t.stamp = TargetState.LOST, 0.0, 2.0
    t.center, t.size, t.image_size = np.array([320.0, 240.0]), np.array([120.0, 120.0]), (480, 640)
    tracker = PromptTracker()

    def points(stamp):
        t.stamp = stamp
        asks = tracker.prompts([t], (480, 640), emb)
        return [p.points[0] for _, p, kind in asks if kind == "search" and p.box is None]

    first = points(2.0)
    tried = next(m for m in (green, blue) if m[int(first[0][1]), int(first[0][0])])   # on one of them
    grid = app.embedding_grid_mask(tried, emb)
    cell = app.cell_pixels(emb)

    def on_tried(pts):   # the point's embedding cell is mostly on the object tried first
        return [bool(grid[int(y // cell), int(x // cell)] >= 0.5) for x, y in pts]

    asks = [(t, Prompt(np.array([first[0]]), np.array([1]), multimask=False), "search")]
    tracker.correct(asks, [_decode(tried)], rgb, FlowFrame.from_rgb(1, rgb), emb, 2.0)
    assert t.state == TargetState.LOST           # not the target's red
    assert (t.distractors[grid >= 0.5] > 2.0).all()
    assert not any(on_tried(points(2.0 + 0.5 * tracker.config.distractor_s)))   # not tried there meanwhile
    again = points(2.0 + 1.5 * tracker.config.distractor_s)
    assert again and on_tried(again)[0]


def test_several_targets_keep_their_own_objects(predictor):
    """Every object of a translate sequence as a box target in one session (the tracking
    benchmark's several-targets run, where this sequence had 3 identity switches before decodes
    were made exclusive): no target's mask covers another object better than its own."""
    seq = TrackingSequence("translate", 7001, height=480, width=640, num_frames=90)
    session = StreamingSession(predictor, SessionConfig(encode_every=3))
    scene = seq.frame(0)
    session.step(scene.image, stamp=0.0, encode=True)

    def objects(scene):
        out = {}
        for o in np.unique(scene.object_id[scene.level == 0]):
            idx = np.flatnonzero((scene.object_id == o) & (scene.level == 0))
            m = scene.masks[idx[0]]
            if np.count_nonzero(m) >= 0.002 * m.size:
                out[int(o)] = m
        return out

    start = objects(scene)
    assert len(start) >= 4
    for o, m in start.items():
        x, y, w, h = cv2.boundingRect(m.view(np.uint8))
        session.add_target(f"obj{o}", Prompt(box=[x, y, x + w, y + h], multimask=False))
    switches, ious = 0, []
    for t in range(1, seq.num_frames):
        scene = seq.frame(t)
        res = session.step(scene.image, stamp=t / 30)
        assert {o.target_id for o in res.objects} == {f"obj{o}" for o in start}   # every target, every frame
        truth = objects(scene)
        for obj in res.objects:
            if obj.mask is None:
                continue
            own_id = int(obj.target_id[3:])
            own = _iou(obj.mask, truth[own_id]) if own_id in truth else 0.0
            other = max((_iou(obj.mask, g) for k, g in truth.items() if k != own_id), default=0.0)
            switches += other > 0.5 and other > own
            ious.append(own)
    assert switches == 0
    assert np.mean(ious) > 0.7


def test_cell_histograms_are_each_cells_colour_histogram(predictor):
    """The per-cell colour histograms the search ranks candidates with are `colour_histogram` of
    each embedding cell's own pixels (a frame small enough for every pixel to be read)."""
    from sam_ros.engine.tracking import appearance as app
    rng = np.random.default_rng(3)
    rgb = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (320, 240), interpolation=cv2.INTER_NEAREST)
    emb = predictor.encode(rgb)
    step = app.cell_pixels(emb)
    assert step < 16   # every pixel read (no subsampling) at this size
    cells = app.cell_histograms(rgb, emb)
    gh, gw = emb.features.shape[-2:]
    ys, xs = np.mgrid[:240, :320]
    cy, cx = (ys / step).astype(int), (xs / step).astype(int)
    checked = 0
    for y in range(gh):
        for x in range(gw):
            m = (cy == y) & (cx == x)
            if not m.any():
                assert not cells[y, x].any()   # padding
                continue
            ref = colour_histogram(rgb, m, cv2.boundingRect(m.view(np.uint8)))
            np.testing.assert_allclose(cells[y, x], ref.ravel(), atol=1e-6)
            checked += 1
    assert checked == int(np.ceil(240 / step)) * int(np.ceil(320 / step))


def _lost_between_look_alikes(predictor, red_weight):
    """A lost red target whose embedding feature mixes a green object's and a red object's
    (the green one weighted more): (tracker, target, embedding, frame, red mask, green mask)."""
    from sam_ros.engine.tracking import appearance as app
    rgb = np.full((480, 640, 3), 90, np.uint8)
    green, red = np.zeros((480, 640), bool), np.zeros((480, 640), bool)
    green[100:220, 380:520] = True
    red[280:400, 100:240] = cv2.circle(np.zeros((120, 140), np.uint8), (70, 60), 58, 1, -1).view(bool)
    rgb[green], rgb[red] = (40, 200, 40), (200, 40, 40)
    rgb[100:220:12, 380:520] = 20   # striped: the two objects differ in the embedding, not only in colour
    emb = predictor.encode(rgb)
    feature = app.pooled_feature(emb, green) + red_weight * app.pooled_feature(emb, red)
    t = Target("t", Prompt(box=[0, 0, 10, 10], multimask=False))
    t.appearance.update(feature / np.linalg.norm(feature), colour_histogram(rgb, red, (100, 280, 140, 120)),
                        float(red.sum()), 1.0)
    t.state, t.absent_since, t.stamp = TargetState.LOST, 0.0, 2.0
    t.center, t.size, t.image_size = np.array([320.0, 240.0]), np.array([140.0, 120.0]), (480, 640)
    return PromptTracker(), t, emb, rgb, red, green


def _on(mask, points):
    return [bool(mask[int(y), int(x)]) for x, y in points]


def test_search_candidates_put_the_targets_colours_first(predictor):
    """A lost red target whose embedding looks more like a green object than like the red one
    (both above the similarity needed for a candidate): ranked by the embedding alone the green
    object's cell is tried first; with the frame's colours the red object's is (at 1280x720 the
    target's cells coming back ranked 7th by embedding, 2nd with colour)."""
    from sam_ros.engine.tracking import appearance as app
    tracker, t, emb, rgb, red, green = _lost_between_look_alikes(predictor, 0.5)
    sim = app.similarity_map(emb, t.appearance.feature)
    grid_red, grid_green = app.embedding_grid_mask(red, emb) >= 0.99, app.embedding_grid_mask(green, emb) >= 0.99
    assert sim[grid_green].max() > sim[grid_red].max() >= tracker.config.reacquire_feature

    def first(frame):
        asks = tracker.prompts([t], (480, 640), emb, frame)
        return [p.points[0] for _, p, kind in asks if kind == "search" and p.box is None][0]

    assert _on(green, [first(None)]) == [True]     # the embedding alone: the look-alike first
    assert _on(red, [first(rgb)]) == [True]         # with colour: the target's own colours first


def test_a_remembered_distractor_is_tried_again_once_it_takes_the_targets_colours(predictor):
    """A search that showed the green object marks its cells for distractor_s; where, within that
    time, those cells take the target's colours (the target coming out where the other object was
    shown) a candidate is tried there again; where they keep their colours, none is."""
    tracker, t, emb, rgb, red, green = _lost_between_look_alikes(predictor, 0.5)
    first = [p.points[0] for _, p, kind in tracker.prompts([t], (480, 640), emb, None)
             if kind == "search" and p.box is None][0]
    assert _on(green, [first]) == [True]
    asks = [(t, Prompt(np.array([first]), np.array([1]), multimask=False), "search")]
    tracker.prompts([t], (480, 640), emb, rgb)                      # the colours seen when searched
    tracker.correct(asks, [_decode(green)], rgb, FlowFrame.from_rgb(1, rgb), emb, 2.0)
    assert t.state == TargetState.LOST
    t.stamp = 2.0 + 0.5 * tracker.config.distractor_s
    for paint, tried in (((40, 200, 40), False), ((200, 40, 40), True)):
        frame = rgb.copy()
        frame[green] = paint
        pts = [p.points[0] for _, p, kind in tracker.prompts([t], (480, 640), emb, frame)
               if kind == "search" and p.box is None]
        assert any(_on(green, pts)) == tried, paint


def test_a_target_carried_out_of_view_is_taken_back_only_across_that_border(predictor):
    """A target that went absent just inside the right border, moving right, has left the view
    once its predicted centre is out of the image. Then a look-alike mask whose box reaches the
    border but whose pixels lie mostly far inside is not it; a sliver along that border is."""
    from sam_ros.engine.tracking import appearance as app
    rgb = np.full((480, 640, 3), 90, np.uint8)
    spread, sliver = np.zeros((480, 640), bool), np.zeros((480, 640), bool)
    spread[150:156, 480:640] = True          # a thin strip along to the border ...
    spread[150:330, 480:530] = True          # ... of a block 110-160 px inside
    sliver[150:330, 600:640] = True
    rgb[spread | sliver] = (200, 40, 40)
    emb = predictor.encode(rgb)
    feature = app.pooled_feature(emb, spread) + app.pooled_feature(emb, sliver)
    hist = colour_histogram(rgb, sliver, (600, 150, 40, 180))
    flow = [FlowFrame.from_rgb(k, rgb) for k in range(3)]
    for mask, expected in ((spread, False), (sliver, True)):
        t = Target("t", Prompt(box=[0, 0, 10, 10], multimask=False))
        t.appearance.update(feature / np.linalg.norm(feature), hist, 10000.0, 1.0)
        assert float(app.pooled_feature(emb, mask) @ t.appearance.feature) >= PromptTracker().config.reacquire_feature
        t.state, t.absent_since, t.stamp, t.image_size = TargetState.OCCLUDED, 0.0, 0.0, (480, 640)
        t.center, t.velocity, t.size = np.array([630.0, 240.0]), np.array([8.0, 0.0]), np.array([200.0, 180.0])
        tracker = PromptTracker()
        tracker.propagate([t], flow[0], flow[1], 1 / 30)
        tracker.propagate([t], flow[1], flow[2], 2 / 30)
        assert t.left_view and t.center[0] >= 640
        search = Prompt(np.array([[620.0, 240.0]]), np.array([1]), multimask=False)
        tracker.correct([(t, search, "search")], [_decode(mask)], rgb, flow[2], emb, 2 / 30)
        assert (t.state == TargetState.REACQUIRED) == expected, expected


def test_a_look_alike_that_stood_in_view_when_the_target_went_absent_is_not_it(predictor):
    """A red target is covered by a grey occluder (its decode fails on colour: occluded). A red
    look-alike far from it passes every appearance check of a search; it is not taken for the
    target where it already stood, unchanged, when the target went absent, and it is where it
    came into view after that (as the target coming back would)."""
    from sam_ros.engine.tracking import appearance as app
    target, other = np.zeros((480, 640), bool), np.zeros((480, 640), bool)
    target[100:200, 100:200] = True
    other[300:400, 400:500] = True

    def frame(with_other, covered):
        img = np.full((480, 640, 3), 90, np.uint8)
        img[target] = (200, 40, 40)
        if with_other:
            img[other] = (200, 40, 40)
        if covered:
            img[80:220, 80:220] = (60, 60, 60)
        return img

    for other_then, expected in ((True, False), (False, True)):
        tracker, t = PromptTracker(), Target("t", Prompt(box=[100, 100, 200, 200], multimask=False))
        first = frame(other_then, False)
        tracker.start(t, first, FlowFrame.from_rgb(0, first), predictor.encode(first), _decode(target), 0, 0.0)
        gone = frame(other_then, True)
        asks = [(t, p, "track") for p in tracker._track_prompts(t, (480, 640))]
        tracker.correct(asks, [_decode(target)] * len(asks), gone, FlowFrame.from_rgb(1, gone),
                        predictor.encode(gone), 0.1)
        assert t.state == TargetState.OCCLUDED
        later = frame(True, True)
        emb = predictor.encode(later)
        assert float(app.pooled_feature(emb, other) @ t.appearance.feature) >= tracker.config.reacquire_feature
        search = Prompt(np.array([[450.0, 350.0]]), np.array([1]), multimask=False)
        t.stamp = 0.2
        tracker.correct([(t, search, "search")], [_decode(other)], later, FlowFrame.from_rgb(2, later), emb, 0.2)
        assert (t.state == TargetState.REACQUIRED) == expected, other_then


def test_a_search_mask_the_model_is_unsure_of_needs_the_targets_own_colours(predictor):
    """What shows of a target coming out from behind an occluder is a sliver the model rates low
    (predicted IoU 0.22 on a 720p occlusion, with colour similarity 1.0). Below reacquire_iou a
    search mask is taken only where its colours match by close_colour; above it 0.7 will do."""
    from sam_ros.engine.tracking import appearance as app
    cfg = PromptTracker().config
    target = np.zeros((480, 640), bool)
    target[170:270, 250:350] = True
    for iou, pure, expected in ((0.25, True, True), (0.25, False, False), (0.35, False, True), (0.15, True, False)):
        rgb = np.full((480, 640, 3), 90, np.uint8)
        rgb[target] = (200, 40, 40)
        if not pure:
            rgb[250:270, 250:350] = (40, 40, 200)   # a fifth in another colour: similarity 0.8
        emb = predictor.encode(rgb)
        ref = np.full((480, 640, 3), (200, 40, 40), np.uint8)
        hist = colour_histogram(ref, target, (250, 170, 100, 100))
        colour = app.histogram_similarity(hist, colour_histogram(rgb, target, (250, 170, 100, 100)))
        assert (colour >= cfg.close_colour) == pure and colour >= cfg.reacquire_colour
        t = Target("t", Prompt(box=[250, 170, 350, 270], multimask=False))
        t.appearance.update(app.pooled_feature(emb, target), hist, float(target.sum()), 1.0)
        t.state, t.absent_since, t.stamp = TargetState.OCCLUDED, 0.0, 0.3
        t.center, t.size, t.image_size = np.array([300.0, 220.0]), np.array([100.0, 100.0]), (480, 640)
        search = Prompt(np.array([[300.0, 220.0]]), np.array([1]), multimask=False)
        PromptTracker().correct([(t, search, "search")], [_decode(target, iou)], rgb, FlowFrame.from_rgb(1, rgb), emb, 0.3)
        assert (t.state == TargetState.REACQUIRED) == expected, (iou, pure)


def test_an_absent_target_takes_its_object_back_from_a_neighbour_whose_mask_grew_over_it(predictor):
    """Target A's mask has grown over the blue object next to its red one while B, the blue
    object's target, was absent. B's search finds the blue object inside A's mask: it looks
    clearly more like B, so B is re-acquired on it and A keeps its red part. Where A's own
    appearance is both colours (the mask is A's object), B does not take it."""
    from sam_ros.engine.tracking import appearance as app
    rgb = np.full((240, 320, 3), 90, np.uint8)
    red, blue = np.zeros((240, 320), bool), np.zeros((240, 320), bool)
    red[60:160, 60:160] = True
    blue[60:160, 160:220] = True
    rgb[red], rgb[blue] = (200, 40, 40), (40, 40, 200)
    both = red | blue
    emb = predictor.encode(rgb)
    flow = FlowFrame.from_rgb(1, rgb)

    def looks(mask):
        return app.pooled_feature(emb, mask), colour_histogram(rgb, mask, cv2.boundingRect(mask.view(np.uint8)))

    for a_is, expected in ((red, True), (both, False)):
        tracker = PromptTracker()
        a, b = Target("a", Prompt(box=[60, 60, 220, 160], multimask=False)), Target("b", Prompt(box=[160, 60, 220, 160], multimask=False))
        tracker.start(a, rgb, flow, emb, _decode(both), 0, 0.0)
        a.appearance = app.Appearance()
        a.appearance.update(*looks(a_is), float(a_is.sum()), 1.0)
        b.appearance.update(*looks(blue), float(blue.sum()), 1.0)
        b.state, b.absent_since, b.stamp, b.image_size = TargetState.LOST, 0.0, 0.1, (240, 320)
        b.center, b.size = np.array([190.0, 110.0]), np.array([60.0, 100.0])
        asks = [(a, p, "track") for p in tracker._track_prompts(a, (240, 320))]
        asks.append((b, Prompt(np.array([[190.0, 110.0]]), np.array([1]), multimask=False), "search"))
        tracker.correct(asks, [_decode(both)] * (len(asks) - 1) + [_decode(blue)], rgb, flow, emb, 0.1)
        assert (b.state == TargetState.REACQUIRED) == expected, expected
        assert a.state.present and np.array_equal(a.mask, red if expected else both)
