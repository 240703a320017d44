"""Trackers behind one interface, and the model-agnostic one: prompt propagation between frames.

`PromptTracker` works with every SAM 1 model. Between encoded frames it moves each target's mask
by the optical flow of points on the object (flow.py); on an encoded frame it re-segments every
target in one decoder batch, prompted from the propagated state (the propagated box with a margin
and the point farthest inside the propagated mask), and checks the decoded mask against the
target's appearance and expected size before accepting it. A target that fails the check, or
whose flow points vanish, becomes occluded: no mask is published; its position is extrapolated
from its last velocity, and on encoded frames it is searched for near that position and where
the embedding and the colours look like it (appearance.py), not again for a while where a search
showed something else, and far from where it is expected only with a closer colour match; after
`occluded_s` it is lost (searched everywhere), after `lost_s` it ends.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..mask_utils import farthest_from_boundary
from ..predictor import ImageEmbedding, MaskPrediction
from ..prompts import Prompt
from . import appearance as app
from .flow import AnchoredPoints, FlowFrame, sample_points, warp_mask
from .target import Target, TargetState


@dataclass
class TrackingConfig:
    """Tracking settings (seconds are source time: the frames' stamps)."""
    box_margin: float = 0.0          # re-segmentation box: the target's box grown by this share per side
    box_size_step: float = 0.05      # a decode changes the box's width and height by at most this share
    box_centre_gain: float = 0.5     # share of the decoded mask's offset the box's centre follows
    box_size_gain: float = 0.2       # share of the decoded mask's size change the box follows
    clip_margin: float = 0.1         # a re-segmented mask is cut to its prompt box grown by this share
    band: float = 0.08               # ... and to the propagated mask grown by this share of its size
    min_flow_reliability: float = 0.2   # share of flow points moving consistently to trust the flow
    min_iou: float = 0.4             # predicted IoU needed to accept a decoded mask
    min_area_ratio: float = 0.15     # decoded area / reference area to accept (partial occlusion)
    max_area_ratio: float = 4.0
    min_colour: float = 0.6          # colour similarity needed to accept a decoded mask as the target
    reacquire_iou: float = 0.3       # to re-acquire an absent target: predicted IoU (or
    close_iou: float = 0.2           # this much where the colours match by `close_colour`),
    close_colour: float = 0.9
    reacquire_colour: float = 0.7    # colour similarity,
    reacquire_feature: float = 0.7   # embedding similarity, and
    reacquire_area: Tuple[float, float] = (0.1, 3.0)   # area ratio
    reenter_reach: float = 0.6       # a target that left the view is taken back only from a mask
                                     # whose centroid is within this share of its size of the
                                     # border it left by
    stale_change: float = 0.3        # a search mask away from where the target went absent whose
                                     # pixels changed less than this share since is something else
    far_colour: float = 0.1          # ... colour similarity by this much more beyond twice the near
                                     # search's reach (see `_searched`)
    appearance_rate: float = 0.02    # how fast the appearance model follows the target
    occluded_s: float = 1.0          # occluded for longer than this: lost
    lost_s: float = 10.0             # absent for longer than this: ended
    max_flow_points: int = 48
    min_point_survival: float = 0.5   # re-sample the flow points when fewer than this share remain
    max_candidates: int = 3          # re-acquisition candidates per absent target and encoded frame
    max_near_candidates: int = 2     # ... and near where it was last seen (a lower similarity will do)
    near_feature: float = 0.5        # embedding similarity of a cell to be tried near the target
    search_growth: float = 1.0       # the near search widens by this share of the target's size per s gone
    velocity_decay: float = 0.9      # extrapolated motion of an absent target slows down per frame
    distractor_s: float = 1.0        # where a search decode showed something else, no candidate
                                     # point is tried again for this long,
    distractor_release: float = 0.2  # unless the cell's colour similarity rose by more than this
    same_object_iou: float = 0.85    # a decode this close to the propagated mask shows the same
                                     # object at the same granularity (then the model's best-rated is taken)
    partial_view: float = 0.8        # visible area below this share of the reference: partly hidden
    regrow_colour: float = 0.7       # a partly hidden target grows back where the new pixels look
                                     # like it (colour similarity of what a decode adds)
    exclusive_iou: float = 0.2       # two targets' decoded masks overlapping more than this: the
                                     # shared pixels go to the one they look more like
    neighbour_points: int = 0        # background points of a re-segmentation prompt: on the
                                     # other present targets' masks inside the target's box (at most
                                     # this many; 0: none, the default: see `_neighbour_points`),
    neighbour_gap: float = 0.2       # ... farther from the target's own mask than this share of its size
    separate_margin: float = 0.15    # targets started on one object: separated only when the shared
                                     # pixels look this much more like one of them (colour + embedding,
                                     # 0-2); an absent target is not re-acquired onto a mask that
                                     # looks this much more like another absent target


def _bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    if mask is None or not mask.any():
        return (0, 0, 0, 0)
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    return (int(x), int(y), int(w), int(h))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    return inter / union if union else 0.0


class Tracker:
    """The interface a tracker gives the streaming session.

    - start(target, frame_rgb, flow, embedding, pred, chosen, stamp): a target begins with a decoded mask;
    - propagate(targets, prev, cur, rgb, stamp): move the targets to a new frame without the model;
    - prompts(targets, size, embedding, rgb): the prompts to re-segment the targets on an encoded frame;
    - correct(targets, prompts, preds, ...): accept or reject the decoded masks, update states;
    - separate_starts(started, others, ...): targets just started on one object (optional).
    """

    def separate_starts(self, started: Sequence[Target], others: Sequence[Target], rgb: np.ndarray,
                        flow: FlowFrame, embedding: Optional[ImageEmbedding], stamp: float) -> None:
        """Targets just started whose masks hold one object: nothing is done by default."""


class PromptTracker(Tracker):
    def __init__(self, config: Optional[TrackingConfig] = None) -> None:
        self.config = config or TrackingConfig()
        self._thumb: Optional[Tuple[np.ndarray, np.ndarray]] = None   # (frame, its thumbnail)

    def _thumbnail_of(self, rgb: np.ndarray) -> np.ndarray:
        """`_thumbnail(rgb)`, made once per frame (every target and candidate of it shares it)."""
        if self._thumb is None or self._thumb[0] is not rgb:
            self._thumb = (rgb, _thumbnail(rgb))
        return self._thumb[1]

    # ---- start ---------------------------------------------------------------------------
    def start(self, target: Target, rgb: np.ndarray, flow: FlowFrame, embedding: Optional[ImageEmbedding],
              pred: MaskPrediction, chosen: int, stamp: float) -> None:
        """A target's first (or re-prompted) decode: its mask, appearance and flow points."""
        mask = pred.masks[chosen]
        target.image_size = flow.size
        target.state = TargetState.TRACKING
        target.absent_since = None
        target.velocity = np.zeros(2)
        self._anchor(target, mask, pred, chosen, flow, stamp, rate=1.0, rgb=rgb, embedding=embedding)
        if not mask.any():  # nothing there: absent from the start
            self._go_absent(target, stamp)

    def separate_starts(self, started: Sequence[Target], others: Sequence[Target], rgb: np.ndarray,
                        flow: FlowFrame, embedding: Optional[ImageEmbedding], stamp: float) -> None:
        """Targets just started on frame `flow` whose masks overlap (IoU above `exclusive_iou`)
        another target's mask on that same frame hold (in part) one object: a detector's box
        around a partly hidden object also holds its occluder, which the model then segments
        (measured on the several-targets benchmark: both identity switches left after exclusive
        decodes came from such a start, the target's first mask on its neighbour at IoU 0.44-0.49,
        on its own object 0.21-0.44). The shared pixels go to the target whose other pixels they
        look like (colour and embedding similarity of the shared pixels to the rest of each mask; a
        mask that is all shared pixels is them): on the several-targets benchmark's starts at
        640x480 and 720p this named the object the shared pixels are mostly on in 13 of 14 pairs
        (the prompt boxes' fit to them, tried first, named the wrong one on occlusion 7001). The
        other keeps the rest and starts again from it
        (appearance included), however small a share of its mask that is, unless it is a speck
        (under 0.2% of the image: then both keep theirs; on occlusion 7007 a box around an object
        mostly hidden behind another took the occluder with 5% of its own pixels: kept whole, as
        a tenth-of-its-mask rule did, it held the occluder's object, 3 identity switches); where
        the two likenesses differ by less than `separate_margin` nothing is done (the one pair of those 14 it named wrongly differed by 0.19; a held-out pair,
        exit_return 7007, by 0.11, and its wrong cut cost 5 identity switches)."""
        new = {id(t) for t in started}
        pool = [t for t in list(started) + [o for o in others if id(o) not in new]
                if t.state.present and t.mask is not None and t.key == flow.key and t.mask.any()]
        for i, a in enumerate(pool):
            for b in pool[i + 1:]:
                if id(a) not in new and id(b) not in new:
                    continue
                if _mask_iou(a.mask, b.mask) <= self.config.exclusive_iou:
                    continue
                shared = a.mask & b.mask
                like_a = _likeness(shared, a.mask & ~shared, rgb, embedding)
                like_b = _likeness(shared, b.mask & ~shared, rgb, embedding)
                if abs(like_a - like_b) < self.config.separate_margin:
                    continue   # no clear owner: left to the decodes of later frames (_exclusive)
                win, lose = (a, b) if like_a > like_b else (b, a)
                rest = lose.mask & ~win.mask
                if np.count_nonzero(rest) < 0.002 * rest.size:
                    continue
                kept = _Decoded(lose)
                lose.appearance = app.Appearance()
                lose.box = None
                self._anchor(lose, rest, kept, 0, flow, stamp, rate=1.0, rgb=rgb, embedding=embedding, found=True)
                lose.decodes -= 1   # the same decode, cut

    def _anchor(self, target: Target, mask: np.ndarray, pred: MaskPrediction, chosen: int, flow: FlowFrame,
                stamp: float, rate: float, rgb: np.ndarray, embedding: Optional[ImageEmbedding],
                found: bool = False) -> None:
        """Accept a decoded mask as the target's state on this frame (`found`: after a search,
        so the box starts again from this mask)."""
        bbox = _bbox(mask)
        target.mask, target.bbox = mask, bbox
        target.key, target.stamp = flow.key, stamp
        target.decoded_key, target.decoded_stamp = flow.key, stamp
        target.left_view = False
        target.absent_view = None
        target.age_frames = 0
        target.propagated = False
        target.low_res = pred.low_res_logits[chosen][None]
        target.iou = float(pred.iou_predictions[chosen])
        target.stability = float(pred.stability_scores[chosen])
        target.decodes += 1
        if bbox[2] > 0:
            target.box = self._next_box(target.box if rate < 1.0 and not found else None, bbox,
                                        may_grow=target.prompt.box is None)
            area = float(np.count_nonzero(mask))
            if found or rate >= 1.0 or area >= self.config.partial_view * target.appearance.area:
                target.center = np.array([bbox[0] + bbox[2] / 2, bbox[1] + bbox[3] / 2])
                target.size = np.array(bbox[2:], np.float64)
            # else partly hidden: the whole object's centre and size stay as propagated
            self._set_anchor(target, mask, bbox, flow)
            # The appearance model follows a fully visible target only (a partial view would
            # shrink the reference area and skew the colours).
            ref = target.appearance.area
            if rate >= 1.0 or ref <= 0 or 0.8 * ref <= area <= 1.25 * ref:
                feature = app.pooled_feature(embedding, mask) if embedding is not None else None
                target.appearance.update(feature, app.colour_histogram(rgb, mask, bbox), area, rate)

    def _set_anchor(self, target: Target, mask: np.ndarray, bbox: Tuple[int, int, int, int], flow: FlowFrame) -> None:
        """Propagation starts again from `mask` on frame `flow`."""
        target.anchor_mask, target.anchor_bbox = mask, bbox
        target.anchor_box = None if target.box is None else target.box.copy()
        target.track = AnchoredPoints(sample_points(mask, bbox, flow.gray, self.config.max_flow_points))
        target.matrix = np.eye(2, 3)

    def _next_box(self, box: Optional[np.ndarray], bbox: Tuple[int, int, int, int], may_grow: bool = True) -> np.ndarray:
        """The target's box after a decode. The flow moves and scales the box between decodes;
        a decode corrects it part of the way towards the decoded mask's box (its size by at most
        `box_size_step`), so a mask that bled into a neighbour cannot inflate the box at once,
        nor can one cut by an occluder shrink it. A box target's box does not grow from decodes
        (`may_grow` False): the detector's box gave the object's extent, the flow scales it while
        the object is in full view, and a partly hidden one grows back by `_regrown`; a mask that
        bled into a neighbour of similar colour pulled the box after it by a step per decode,
        and the larger box let it bleed further (measured on the demo's footage: 30 000 px of a
        24 000 px object grew to 60 000 px in 40 decodes; mean IoU 0.52, 0.72 without)."""
        x, y, w, h = bbox
        if box is None:
            return np.array([x, y, x + w, y + h], np.float64)
        cfg = self.config
        pc, ps = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
        dc = np.array([x + w / 2, y + h / 2]) - pc
        ds = np.array([w, h], np.float64) - ps
        c = pc + cfg.box_centre_gain * dc
        size = np.clip(ps + cfg.box_size_gain * ds, (1 - cfg.box_size_step) * ps,
                       (1 + (cfg.box_size_step if may_grow else 0.0)) * ps)
        return np.concatenate([c - size / 2, c + size / 2])

    def _go_absent(self, target: Target, stamp: float, view: Optional[np.ndarray] = None) -> None:
        """The target is no longer seen (`view`: the RGB frame it went absent on, if known)."""
        if target.state.present:
            target.state = TargetState.OCCLUDED
            target.absent_since = stamp
            target.absent_view = self._thumbnail_of(view) if view is not None else None
            target.absent_box = target.bbox
            h, w = target.image_size
            target.left_view = not (0 <= target.center[0] < w and 0 <= target.center[1] < h)
        target.mask = None
        target.bbox = (0, 0, 0, 0)
        target.track = None
        target.anchor_mask = None

    def _age_absent(self, target: Target, stamp: float) -> None:
        since = target.absent_since if target.absent_since is not None else stamp
        gone = stamp - since
        if gone > self.config.lost_s:
            target.state = TargetState.ENDED
        elif gone > self.config.occluded_s:
            target.state = TargetState.LOST

    # ---- between encoded frames -------------------------------------------------------------
    def propagate(self, targets: Sequence[Target], prev: FlowFrame, cur: FlowFrame, stamp: float) -> None:
        """Move every target from frame prev to frame cur by optical flow."""
        h, w = cur.size
        for t in targets:
            if t.state == TargetState.ENDED:
                continue
            t.frames += 1
            if t.state == TargetState.REACQUIRED:
                t.state = TargetState.TRACKING
            if not t.state.present:
                t.center = t.center + t.velocity
                t.velocity = t.velocity * self.config.velocity_decay
                if not (0 <= t.center[0] < w and 0 <= t.center[1] < h):
                    # Its motion carried it out of the image after it went absent (a decode
                    # failed on what was left of it at the border): it has left the view.
                    t.left_view = True
                t.key, t.stamp = cur.key, stamp
                self._age_absent(t, stamp)
                continue
            if t.track is None or t.anchor_mask is None:
                self._set_anchor(t, t.mask, t.bbox, prev)
            motion = t.track.advance(prev, cur, t.matrix)
            if motion.matrix is None or motion.reliability < self.config.min_flow_reliability:
                # The points vanished (covered, or the view changed too much): hold the last
                # mask moved by the last velocity until the next encoded frame decides.
                m = t.matrix.copy()
                m[:, 2] += t.velocity
            else:
                m = motion.matrix
            mask = warp_mask(t.anchor_mask, t.anchor_bbox, m)
            bbox = _bbox(mask)
            t.age_frames += 1
            t.propagated = True
            t.key, t.stamp = cur.key, stamp
            area = np.count_nonzero(mask)
            if bbox[2] == 0 or area < 0.1 * max(1.0, t.appearance.area) and _left_view(m, t, w, h):
                t.center = _moved_center(m, t)
                self._go_absent(t, stamp)   # carried out of the view
                continue
            # The reference area follows the scale the flow measures, while the target is in full
            # view: on a partial view (an occluder or the image border cuts it) the points sit on
            # what is left of it and their fit reads the loss of area as shrinking (measured:
            # the reference fell to a tenth in 20 frames while the object kept its size), and the
            # box would shrink with it and stop the target from growing back.
            full_view = t.appearance.area <= 0 or area >= self.config.partial_view * t.appearance.area
            scale = abs(np.linalg.det(m[:, :2])) if full_view else abs(np.linalg.det(t.matrix[:, :2]))
            t.appearance.area *= scale / max(1e-9, abs(np.linalg.det(t.matrix[:, :2])))
            if t.anchor_box is not None:
                # The box moves with the object's centre and scales with it (not with its rotation).
                bc = (t.anchor_box[:2] + t.anchor_box[2:]) / 2
                nc = m[:, :2] @ bc + m[:, 2]
                if not full_view:   # keep the box's size
                    scale = ((t.box[2:] - t.box[:2]).prod() / max(1e-9, (t.anchor_box[2:] - t.anchor_box[:2]).prod())
                             if t.box is not None else 1.0)
                half = (t.anchor_box[2:] - t.anchor_box[:2]) / 2 * np.sqrt(scale)
                t.box = np.concatenate([nc - half, nc + half])
            if full_view:
                c = np.array([bbox[0] + bbox[2] / 2, bbox[1] + bbox[3] / 2])
            else:
                # Partly hidden: the visible part's centre slides towards what is left in view;
                # the whole object's centre moves with the points on it (where it is searched
                # for if it goes on to vanish behind the occluder).
                c = _carry(t.center, t.matrix, m)
            t.velocity = 0.5 * t.velocity + 0.5 * (c - t.center)
            t.center = c
            t.mask, t.bbox, t.matrix = mask, bbox, m
            if t.track.survival < self.config.min_point_survival:
                self._set_anchor(t, mask, bbox, cur)   # too few points left: start again from here

    # ---- on encoded frames ------------------------------------------------------------------
    def prompts(self, targets: Sequence[Target], size: Tuple[int, int],
                embedding: Optional[ImageEmbedding],
                rgb: Optional[np.ndarray] = None) -> List[Tuple[Target, Prompt, str]]:
        """Prompts to decode on an encoded frame: per present target one (kind "track"); per
        absent target a box where it is expected and points where the embedding and (given the
        frame's `rgb`) the colours look like it (kind "search")."""
        h, w = size
        out: List[Tuple[Target, Prompt, str]] = []
        cells = None   # the frame's per-cell colour histograms, made once for all absent targets
        shown = [t for t in targets if t.state.present and t.mask is not None]
        for t in targets:
            if t.state == TargetState.ENDED:
                continue
            if t.state.present and t.mask is not None:
                out.extend((t, p, "track") for p in self._track_prompts(t, size, shown))
                continue
            if t.state == TargetState.OCCLUDED and t.size.any():
                half = t.size / 2 * (1 + self.config.box_margin)
                box = np.array([t.center[0] - half[0], t.center[1] - half[1], t.center[0] + half[0], t.center[1] + half[1]])
                box = np.clip(box, 0, [w, h, w, h])
                if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                    out.append((t, Prompt(box=box, multimask=False), "search"))
            if embedding is not None and t.appearance.feature is not None:
                sim = app.similarity_map(embedding, t.appearance.feature)
                # Candidates are ranked by embedding + colour similarity of the cell: at 1280x720
                # the embedding alone rates look-alikes of another colour above the target's
                # first cells coming back (measured on the occlusion footage: the target's cells
                # 7th by embedding, 2nd with the colour added, 1st a frame later).
                colour = None
                if rgb is not None and t.appearance.histogram is not None and rgb.shape[:2] == (h, w):
                    if cells is None:
                        cells = app.cell_histograms(rgb, embedding)
                    colour = app.cell_colour_similarity(cells, t.appearance.histogram)
                t.search_colour = colour
                if t.distractors is not None and t.distractors.shape == sim.shape:
                    blocked = t.distractors > t.stamp
                    if colour is not None and t.distractor_colour is not None:
                        # ... unless the cell now looks more like the target than it did then
                        # (the target coming back where the other object was shown next to it)
                        blocked &= colour <= t.distractor_colour + self.config.distractor_release
                    sim[blocked] = -1.0
                score = None if colour is None else sim + colour
                points = app.candidate_points(sim, embedding, self.config.reacquire_feature,
                                              self.config.max_candidates, score=score)
                # Near where it was last seen (moved on by its velocity, brought into the image):
                # a target coming back into view shows a sliver at first (at the border, at an
                # occluder's edge), whose cells look less like it than other objects' do
                # (measured: 0.73-0.88 against 0.94 elsewhere), so the global maxima miss it.
                window = _window(t, size, (1 + self.config.search_growth * _gone(t)) / 2)
                if window is not None:
                    near = app.candidate_points(sim, embedding, self.config.near_feature,
                                                self.config.max_near_candidates, window, score)
                    points += [p for p in near if all(abs(p[0] - q[0]) + abs(p[1] - q[1]) > 1 for q in points)]
                for x, y, _ in points:
                    out.append((t, Prompt(np.array([[x, y]]), np.array([1]), multimask=True), "search"))
        return out

    def _track_prompts(self, t: Target, size: Tuple[int, int], shown: Sequence[Target] = ()) -> List[Prompt]:
        h, w = size
        x0, y0, x1, y1 = t.box if t.box is not None else t.box_xyxy()
        mx, my = (x1 - x0) * self.config.box_margin, (y1 - y0) * self.config.box_margin
        box = np.clip([x0 - mx, y0 - my, x1 + mx, y1 + my], 0, [w, h, w, h])
        points = np.array([farthest_from_boundary(t.mask)[0]], np.float64)
        labels = np.array([1])
        away = self._neighbour_points(t, box, shown)
        if len(away):
            points = np.concatenate([points, away])
            labels = np.concatenate([labels, np.zeros(len(away), int)])
        boxed = Prompt(points, labels, box, None, multimask=False)
        if t.prompt.box is None or self._partly_hidden(t):
            # Started from clicks: also re-prompted by the point alone, its three candidates
            # decoded; correct() takes, of the accepted candidates that agree with the propagated
            # mask, the one the model rates best, so the granularity the operator picked (a whole
            # object, or a part) is kept, and a box made from the target's own mask cannot carry in a neighbour the
            # first mask took; the boxed prompt stands in where the point alone is uncertain.
            # A box target that is partly hidden gets the point alone too: its box follows
            # what is visible, and a candidate of the point alone is how it grows back when the
            # object comes out from behind the occluder (correct(): `_regrown`).
            return [Prompt(points, labels, None, None, multimask=True), boxed]
        return [boxed]

    def _neighbour_points(self, t: Target, box: np.ndarray, shown: Sequence[Target]) -> np.ndarray:
        """Background points for t's re-segmentation: the inmost pixel of each other present
        target's mask inside t's box and beyond the `neighbour_gap` band around t's own mask (up
        to `neighbour_points`, the largest such parts first). Where the model merges two objects
        it tracks, the neighbour's pixels are named as not this target (as SAM-PT prompts with
        negative points). Off by default: measured with 2 points and a 0.2 band on the
        several-targets benchmark at 640x480, 40 fresh sequences (seeds 9000-9007): identity
        switches 16 -> 4 (13 of them one pair flickering on pan 9007), J 0.754 -> 0.756; on the
        40 held-out sequences 3 -> 6 switches, J 0.737 both; sequences with a switch 5 -> 6 of 80.
        Without the band, 7 switches and J 0.740 on the fresh set (a neighbour's mask that bled
        over the target put a background point on it)."""
        n = int(self.config.neighbour_points)
        if n <= 0 or t.mask is None:
            return np.zeros((0, 2))
        x0, y0 = int(max(0, np.floor(box[0]))), int(max(0, np.floor(box[1])))
        x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
        parts = []
        own = t.mask
        if self.config.neighbour_gap > 0:
            own = _clip_to_band(np.ones_like(t.mask), t.mask, t.bbox, self.config.neighbour_gap)
        for u in shown:
            if u is t or u.mask is None or u.mask.shape != t.mask.shape:
                continue
            part = u.mask[y0:y1, x0:x1] & ~own[y0:y1, x0:x1]
            area = np.count_nonzero(part)
            if area < max(16, 0.05 * np.count_nonzero(u.mask)):
                continue
            (x, y), _ = farthest_from_boundary(part)
            parts.append((area, x + x0, y + y0))
        parts.sort(reverse=True)
        return np.array([[x, y] for _, x, y in parts[:n]], np.float64).reshape(-1, 2)

    def _partly_hidden(self, t: Target) -> bool:
        return t.appearance.area > 0 and t.area < self.config.partial_view * t.appearance.area

    def _regrown(self, t: Target, pred: MaskPrediction, rgb: np.ndarray) -> Optional[int]:
        """For a partly hidden target: the largest candidate of this decode that holds the
        propagated mask, is no larger than the target in full view, and whose added pixels look
        like the target (the decode's box and band clips would keep it from growing back)."""
        cfg = self.config
        prop = t.mask
        n_prop = np.count_nonzero(prop)
        ref = t.appearance.area
        if n_prop == 0 or ref <= 0 or t.appearance.histogram is None:
            return None
        best, best_area = None, 0
        near = None
        for k, m in enumerate(pred.masks):
            area = np.count_nonzero(m)
            if (pred.iou_predictions[k] < cfg.min_iou or area <= 1.1 * n_prop or area > 1.25 * ref
                    or np.count_nonzero(m & prop) < 0.8 * n_prop or area <= best_area):
                continue
            if near is None:   # what the propagation could explain: its mask grown by the band
                near = _clip_to_band(np.ones_like(prop), prop, t.bbox, cfg.band)
            added = m & ~near
            if not added.any():
                continue
            colour = app.histogram_similarity(t.appearance.histogram,
                                              app.colour_histogram(rgb, added, _bbox(added)))
            if colour >= cfg.regrow_colour:
                best, best_area = k, area
        return best

    def _searched(self, t: Target, pred: MaskPrediction, rgb: np.ndarray,
                  embedding: Optional[ImageEmbedding]) -> Optional[Tuple[int, float]]:
        """(candidate, score) of a search decode that passes as the absent target, or None. Every
        candidate is weighed, not only the model's best-rated: an object coming out from behind an
        occluder shows a part of itself, which the point's part-level candidate covers while the
        best-rated one spills over what is next to it (measured on the occlusion footage: the
        target's part passed 3 frames after it reappeared, the best-rated mask failed on colour
        until a wrong object passed 15 frames later)."""
        cfg = self.config
        best = None
        # A target that left the image comes back across the border where it left: until it has
        # been gone for half of lost_s it is taken back only there (its centre within 3/4 of its size
        # of the exit point), not from an object far inside the image that looks like it (measured:
        # one 200 px from where the target left, taken for it 6 frames later, and with a window
        # widening at its size per second 35 frames later, both before the target came back).
        # Within the image the predicted position is too rough for such a gate (flow points at an
        # occluder's edge drag it along). What shows of it lies along that border until it is all
        # back in: the mask's centroid must be within `reenter_reach` of its size of the border
        # (`_reenters`; measured on a held-out exit, seed 9004 at 640x480: a mask spread from the
        # border 290 px into the image had its box's centre inside the window and was followed for
        # 29 frames before the target came back).
        # (the window: where the centre of what shows of it lies while it comes back in)
        window = _window(t, rgb.shape[:2], 0.75) if t.left_view and _gone(t) <= cfg.lost_s / 2 else None
        # Far from where it is expected, a look-alike is more likely than the target: there the
        # colours must match by `far_colour` more (measured on the 1280x720 occlusion footage:
        # another object 2.7 target widths away passed at colour 0.71 while the target was still
        # hidden and was tracked from then on; the target itself, coming back 1.5 widths from
        # where it was expected, scored 0.86-1.0).
        near = _window(t, rgb.shape[:2], 1 + cfg.search_growth * _gone(t))
        for k, mask in enumerate(pred.masks):
            iou = float(pred.iou_predictions[k])
            if iou < min(cfg.reacquire_iou, cfg.close_iou) or not mask.any():
                continue
            bbox = _bbox(mask)
            x, y, w, h = bbox
            if window is not None and not (window[0] <= x + w / 2 <= window[2] and window[1] <= y + h / 2 <= window[3]
                                           and _reenters(mask, t, cfg.reenter_reach)):
                continue
            ratio = np.count_nonzero(mask) / max(1.0, t.appearance.area)
            if not cfg.reacquire_area[0] <= ratio <= cfg.reacquire_area[1]:
                continue
            colour = app.histogram_similarity(t.appearance.histogram, app.colour_histogram(rgb, mask, bbox))
            far = near is not None and not (near[0] <= x + w / 2 <= near[2] and near[1] <= y + h / 2 <= near[3])
            if colour < cfg.reacquire_colour + (cfg.far_colour if far else 0.0):
                continue
            # The model rates what shows of a target coming back low (on a 1280x720 occlusion:
            # a sliver at predicted IoU 0.22, colour 1.0, IoU 0.80 with the truth): below
            # reacquire_iou its colours must match closely (on 80 sequences with occlusions, exits
            # and pans at both sizes: re-acquired sooner on 3, after 11 -> 5 frames on one, never
            # later, no more frames with a mask while absent)
            if iou < cfg.reacquire_iou and colour < cfg.close_colour:
                continue
            feature = app.pooled_feature(embedding, mask) if embedding is not None else None
            cos = float(feature @ t.appearance.feature) if feature is not None and t.appearance.feature is not None else 0.0
            if cos < cfg.reacquire_feature:
                continue
            # An object that stood where it is, unchanged, when the target went absent is something
            # else (measured on a held-out occlusion, seed 9003 at 640x480: a look-alike 170 px below
            # where the target went behind the occluder passed at colour 0.75 three frames later
            # and was followed for 12 frames; 4% of its pixels had changed, 87-92% of the target's
            # when it came back out).
            if _stood_there(t, mask, bbox, self._thumbnail_of(rgb), cfg.stale_change):
                continue
            if best is None or colour + cos > best[1]:
                best = (k, colour + cos)
        return best

    def _remember_distractor(self, t: Target, prompt: Prompt, pred: MaskPrediction,
                             embedding: ImageEmbedding, stamp: float) -> None:
        """A point search showed something that is not the target: its cell, and the cells its
        object covers (the model's best-rated mask, when object-sized), get no candidate point
        for `distractor_s`. The similarity map alone keeps pointing at the same look-alikes
        frame after frame (measured on the 1280x720 occlusion footage: three other objects'
        cells at 0.94-0.96 took every candidate slot for 10-20 frames while the target's first
        cells, coming out from behind the occluder, scored 0.81-0.93). The best-rated mask may
        spill onto the target coming back next to the point: it is searched for again when the
        memory runs out (measured: the smallest mask instead did no better)."""
        gh, gw = embedding.features.shape[-2:]
        if t.distractors is None or t.distractors.shape != (gh, gw):
            t.distractors = np.zeros((gh, gw), np.float64)
            t.distractor_colour = np.zeros((gh, gw), np.float32)
        until = stamp + self.config.distractor_s
        k = int(np.argmax(pred.iou_predictions))
        mask = pred.masks[k]
        cells = np.zeros((gh, gw), bool)
        if mask.any() and np.count_nonzero(mask) <= self.config.reacquire_area[1] * max(1.0, t.appearance.area):
            cells = app.embedding_grid_mask(mask, embedding) >= 0.5
        x, y = prompt.points[0]
        cell = app.cell_pixels(embedding)
        cells[min(gh - 1, int(y // cell)), min(gw - 1, int(x // cell))] = True
        t.distractors[cells] = until
        seen = t.search_colour if t.search_colour is not None and t.search_colour.shape == (gh, gw) else None
        t.distractor_colour[cells] = seen[cells] if seen is not None else np.inf

    def _passes(self, t: Target, mask: np.ndarray, rgb: np.ndarray) -> bool:
        """Whether a mask cut by another target's still passes as t (area and colour)."""
        n = np.count_nonzero(mask)
        if n == 0:
            return False
        ratio = n / max(1.0, t.appearance.area)
        colour = app.histogram_similarity(t.appearance.histogram, app.colour_histogram(rgb, mask, _bbox(mask)))
        return self.config.min_area_ratio <= ratio <= self.config.max_area_ratio and colour >= self.config.min_colour

    def _exclusive(self, entries: List[list], rgb: np.ndarray, embedding: Optional[ImageEmbedding]) -> None:
        """Two accepted decodes of one frame whose masks overlap at IoU above `exclusive_iou` hold
        (in part) the same object: the pixels they share go to the target they look more like
        (colour and embedding), the other keeps the rest if it still passes, else it is rejected.
        Measured on the several-targets benchmark: every identity switch happened on a decode that
        took the object another present target held (a partly hidden target's box holding its
        occluder, a look-alike neighbour), the two masks at IoU 0.45-1.0. Targets that overlap
        less (a small part and its whole) keep sharing pixels. entries: [target, mask, ok]."""
        for i, a in enumerate(entries):
            for b in entries[i + 1:]:
                if not (a[2] and b[2]) or _mask_iou(a[1], b[1]) <= self.config.exclusive_iou:
                    continue
                seen = _describe(a[1] & b[1], rgb, embedding)
                win, lose = (a, b) if (_looks_like(a[0].appearance.histogram, a[0].appearance.feature, seen)
                                       >= _looks_like(b[0].appearance.histogram, b[0].appearance.feature, seen)) else (b, a)
                lose[1] = lose[1] & ~win[1]
                lose[2] = self._passes(lose[0], lose[1], rgb)

    def correct(self, targets_prompts: Sequence[Tuple[Target, Prompt, str]], preds: Sequence[MaskPrediction],
                rgb: np.ndarray, flow: FlowFrame, embedding: Optional[ImageEmbedding], stamp: float) -> None:
        """Accept or reject the decoded masks of one encoded frame; update every target's state."""
        cfg = self.config
        tracked = {}
        searched = {}
        for (t, prompt, kind), pred in zip(targets_prompts, preds):
            if kind == "search":
                found = self._searched(t, pred, rgb, embedding)
                if found is not None and (id(t) not in searched or found[1] > searched[id(t)][3]):
                    searched[id(t)] = (t, pred, found[0], found[1], pred.masks[found[0]])
                elif found is None and prompt.box is None and len(prompt.points) and embedding is not None:
                    self._remember_distractor(t, prompt, pred, embedding, stamp)
                continue
            chosen = int(np.argmax(pred.iou_predictions))
            mask = pred.masks[chosen]
            regrown = None
            if kind == "track" and t.mask is not None and t.mask.any():
                if prompt.box is None and self._partly_hidden(t):
                    regrown = self._regrown(t, pred, rgb)
                if regrown is not None:
                    chosen, mask = regrown, pred.masks[regrown]
                else:
                    if len(pred.iou_predictions) > 1:
                        # Of the candidates that agree with the propagated mask (the same
                        # granularity), the one the model rates best; else the closest.
                        agrees = [_mask_iou(m, t.mask) for m in pred.masks]
                        same = [k for k, a in enumerate(agrees) if a >= cfg.same_object_iou]
                        chosen = (max(same, key=lambda k: pred.iou_predictions[k]) if same
                                  else int(np.argmax(agrees)))
                        mask = pred.masks[chosen]
                    box = prompt.box if prompt.box is not None else t.box
                    if box is not None:
                        mask = _clip_to_box(mask, box, cfg.clip_margin)
                    mask = _clip_to_band(mask, t.mask, t.bbox, cfg.band)
            if not mask.any():
                continue
            bbox = _bbox(mask)
            area = float(np.count_nonzero(mask))
            ratio = area / max(1.0, t.appearance.area)
            colour = app.histogram_similarity(t.appearance.histogram, app.colour_histogram(rgb, mask, bbox))
            iou = float(pred.iou_predictions[chosen])
            ok = (iou >= cfg.min_iou and cfg.min_area_ratio <= ratio <= cfg.max_area_ratio
                  and colour >= cfg.min_colour)
            # Several asks for one target: the accepted one closest to the propagation.
            agree = _mask_iou(mask, t.mask) if t.mask is not None else 0.0
            grows = ok and regrown is not None
            rank = (grows, ok, agree >= cfg.same_object_iou, iou if agree >= cfg.same_object_iou else agree)
            best = tracked.get(id(t))
            if best is None or rank > best[5]:
                tracked[id(t)] = (t, pred, chosen, ok, mask, rank, grows)
        present: List[list] = []   # [target, its mask on this frame]
        entries = [[e[0], e[4], e[3]] for e in tracked.values()]
        self._exclusive(entries, rgb, embedding)
        for (t, pred, chosen, _, _, _, grows), (_, mask, ok) in zip(tracked.values(), entries):
            if ok:   # grown back: the box starts again from the grown mask
                self._anchor(t, mask, pred, chosen, flow, stamp, cfg.appearance_rate, rgb, embedding, found=grows)
                present.append([t, t.mask])
            else:
                self._go_absent(t, stamp, rgb)
        # Re-acquisitions: onto an object another target holds only where it looks clearly more
        # like the absent target, which then takes it back (a present target's mask grows over
        # a neighbour coming out from behind an occluder while that neighbour's own target is
        # absent: measured on the several-targets benchmark, occlusion 7004, a target's mask
        # took the scripted target's object within 25 frames of it coming back); never onto one
        # that looks clearly more like another absent target (occlusion 7004 too: a target
        # re-acquired onto the object of a lost one, which it claimed by 0.34 more, colour +
        # embedding similarity).
        absent = list({id(t): t for t, _, kind in targets_prompts if kind == "search"}.values())
        for t, pred, chosen, score, mask in sorted(searched.values(), key=lambda s: -s[3]):
            holders = [h for h in present if _mask_iou(mask, h[1]) > 0.3]
            rivals = [u for u in absent if u is not t and u.state != TargetState.ENDED
                      and u.appearance.histogram is not None] + [h[0] for h in holders]
            if rivals:
                seen = _describe(mask, rgb, embedding)
                own = _looks_like(t.appearance.histogram, t.appearance.feature, seen)
                # Taken from a holder only by a clearly better claim than every other's; where
                # no target holds it, another absent target blocks it only by a clearly better one.
                bar = own - cfg.separate_margin if holders else own + cfg.separate_margin
                if max(_looks_like(u.appearance.histogram, u.appearance.feature, seen) for u in rivals) > bar:
                    continue
            for h in holders:   # what is left of the holder's mask is its own, if it still passes
                u, rest = h[0], h[1] & ~mask
                if self._passes(u, rest, rgb):
                    self._anchor(u, rest, _Decoded(u), 0, flow, stamp, 0.0, rgb, embedding)
                    u.decodes -= 1   # the same decode, cut
                else:
                    self._go_absent(u, stamp, rgb)
                h[1] = rest
            self._anchor(t, mask, pred, chosen, flow, stamp, cfg.appearance_rate, rgb, embedding, found=True)
            t.state = TargetState.REACQUIRED
            t.absent_since = None
            t.velocity = np.zeros(2)
            t.reacquisitions += 1
            present.append([t, mask])


class _Decoded:
    """A target's last decode's scores, as one candidate (for re-anchoring it on a cut mask)."""

    def __init__(self, t: Target) -> None:
        self.low_res_logits = [t.low_res[0]]
        self.iou_predictions = [t.iou]
        self.stability_scores = [t.stability]


def _describe(region: np.ndarray, rgb: np.ndarray, embedding: Optional[ImageEmbedding]):
    """(colour histogram, pooled embedding feature or None) of the pixels of `region`."""
    feature = app.pooled_feature(embedding, region) if embedding is not None else None
    return app.colour_histogram(rgb, region, _bbox(region)), feature


def _looks_like(histogram: Optional[np.ndarray], feature: Optional[np.ndarray], seen) -> float:
    """Colour similarity + embedding similarity (0-2) of what `_describe` saw to a reference."""
    score = app.histogram_similarity(histogram, seen[0])
    if feature is not None and seen[1] is not None:
        score += float(seen[1] @ feature)
    return score


def _likeness(region: np.ndarray, rest: np.ndarray, rgb: np.ndarray, embedding: Optional[ImageEmbedding]) -> float:
    """How much `region` looks like `rest` (colour + embedding similarity, 0-2); `rest` empty:
    the region is all of that mask, which it is most like (3)."""
    if not rest.any():
        return 3.0
    return _looks_like(*_describe(rest, rgb, embedding), _describe(region, rgb, embedding))


def _clip_to_box(mask: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """The mask without what lies outside `box` grown by `margin` of its size per side."""
    h, w = mask.shape
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    X0, Y0 = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
    X1, Y1 = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
    out = np.zeros_like(mask)
    out[Y0:Y1, X0:X1] = mask[Y0:Y1, X0:X1]
    return out


def _clip_to_band(mask: np.ndarray, around: np.ndarray, bbox: Tuple[int, int, int, int], share: float) -> np.ndarray:
    """The mask without what lies farther from `around` (the propagated mask, bbox its box) than
    `share` of its size: a decode corrects the propagation's outline, it cannot bleed into the
    neighbours."""
    x, y, w, h = bbox
    r = max(2, int(round(share * np.sqrt(float(np.count_nonzero(around))))))
    H, W = mask.shape
    X0, Y0, X1, Y1 = max(0, x - r), max(0, y - r), min(W, x + w + r), min(H, y + h + r)
    grown = cv2.dilate(np.ascontiguousarray(around[Y0:Y1, X0:X1], dtype=np.uint8),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    out = np.zeros_like(mask)
    out[Y0:Y1, X0:X1] = mask[Y0:Y1, X0:X1] & grown.view(bool)
    return out


def _gone(t: Target) -> float:
    """Seconds (source time) an absent target has been gone."""
    return max(0.0, t.stamp - t.absent_since) if t.absent_since is not None else 0.0


def _window(t: Target, size: Tuple[int, int], scale: float) -> Optional[Tuple[float, float, float, float]]:
    """Where an absent target is looked for: a box of `scale` x its size on each side of its
    predicted centre held inside the image (x0, y0, x1, y1), or None before it has a size. The
    near search uses (1 + search_growth x seconds gone) / 2: its own box, widening with time."""
    if not t.size.any():
        return None
    h, w = size
    c = np.clip(t.center, 0, [w - 1, h - 1])
    r = scale * t.size
    return (c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1])


def _reenters(mask: np.ndarray, t: Target, reach: float) -> bool:
    """Whether the mask's centroid lies within `reach` x the target's size of the image border
    that the target's predicted centre lies beyond: a target that left the view comes back across
    the border it left by, and what shows of it lies along that border until it is all back in
    (True where the predicted centre is inside the image)."""
    H, W = mask.shape
    (cx, cy), (rx, ry) = t.center, reach * t.size
    m = cv2.moments(mask.view(np.uint8), binaryImage=True)
    if m["m00"] <= 0:
        return False
    x, y = m["m10"] / m["m00"], m["m01"] / m["m00"]
    sides = [W - x <= rx] if cx >= W else [x <= rx] if cx < 0 else []
    sides += [H - y <= ry] if cy >= H else [y <= ry] if cy < 0 else []
    return not sides or any(sides)


def _stood_there(t: Target, mask: np.ndarray, bbox: Tuple[int, int, int, int], now: np.ndarray,
                 changed: float) -> bool:
    """Whether the object of `mask` was in view already, where it is now, when the target went
    absent, away from where the target was then: under `changed` of its pixels differ (on
    thumbnails, `now` this frame's, by more than 24 levels in a colour channel) from the frame
    the target went absent on. A target coming back shows where something else was (the
    occluder, the background beyond the border)."""
    then = t.absent_view
    if then is None or then.shape != now.shape:
        return False
    x, y, w, h = bbox
    ax, ay, aw, ah = t.absent_box
    if aw > 0:
        m = 0.25 * max(aw, ah)   # near where it was seen last it may never have left the view
        if x < ax + aw + m and ax - m < x + w and y < ay + ah + m and ay - m < y + h:
            return False
    small = cv2.resize(mask.view(np.uint8), then.shape[1::-1], interpolation=cv2.INTER_NEAREST).view(bool)
    if not small.any():
        return False
    diff = np.abs(now.astype(np.int16) - then.astype(np.int16)).max(-1)
    return float(np.mean(diff[small] > 24)) < changed


THUMBNAIL_SIDE = 320   # what a target left behind when it went absent is kept this small


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """The frame with its longest side at most THUMBNAIL_SIDE, blurred (a colour comparison that
    a few pixels of motion or noise do not upset)."""
    H, W = rgb.shape[:2]
    f = min(1.0, THUMBNAIL_SIDE / max(H, W))
    h, w = max(1, round(H * f)), max(1, round(W * f))
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != rgb.shape[:2] else rgb
    return cv2.blur(small, (3, 3))


def _carry(p: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Point p on the frame of transform `before` (anchor -> that frame) carried to the frame of
    `after` (anchor -> this one)."""
    a = before[:, :2]
    if abs(np.linalg.det(a)) < 1e-6:
        return p + (after[:, 2] - before[:, 2])
    q = np.linalg.solve(a, p - before[:, 2])
    return after[:, :2] @ q + after[:, 2]


def _moved_center(m: np.ndarray, t: Target) -> np.ndarray:
    """Where the anchor-to-current transform m carries the centre of the target's anchor mask."""
    x, y, w, h = t.anchor_bbox
    return m[:, :2] @ np.array([x + w / 2, y + h / 2]) + m[:, 2]


def _left_view(m: np.ndarray, t: Target, w: int, h: int) -> bool:
    """Whether the transform carries the target's centre out of the w x h image."""
    c = _moved_center(m, t)
    return not (0 <= c[0] < w and 0 <= c[1] < h)
