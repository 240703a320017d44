"""SAM 2 video tracking, one frame at a time (no video up front, nothing grows with its length).

The caller encodes each frame once with a :class:`Sam2Predictor` (the same :class:`ImageEmbedding`
serves image prompts and tracking) and hands it to :class:`Sam2VideoTracker` with its frame
index. On any frame, objects can be added (points, box or mask), refined (more clicks) and
removed; ``track`` gives every object a mask and an object score on the frame.

Each object has its own memory bank, as in Meta's SAM 2 video predictor (objects are tracked
independently; 1.1.0 does the same), but bounded:
- conditioning frames (where the object was prompted): at most ``max_cond_frames``; past the cap
  the oldest one after the first is dropped;
- the spatial memories of the last ``num_maskmem - 1`` frames and the object pointers of the last
  ``max_obj_ptrs - 1`` frames; older ones are dropped as frames arrive.
Memory features are kept in bfloat16 (as the reference stores them). A frame whose object score
is negative is "absent": its mask is empty, and its memory carries the no-object embedding, so an
object that leaves and returns is recovered from the conditioning frames and pointers.

Memory-conditioned features for frame t use the conditioning frames and the stored frames
t-1 ... t-(num_maskmem-1) by frame index (missing frames are skipped); the pointers' temporal
encoding is normalised by max_obj_ptrs - 1, as the reference does for videos of at least that
many frames.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..model.sam2.sam2_base import SAM2, SAM2HeadsOutput
from .predictor import ImageEmbedding, MaskPrediction
from .prompts import InputError, validate_boxes, validate_points
from .sam2_predictor import LOW_RES_CLAMP, Sam2Predictor


class TrackResult(NamedTuple):
    """One object on one frame."""
    obj_id: int
    frame_idx: int
    prediction: MaskPrediction      # the chosen mask as the image predictor's type, unbatched with
                                    # one mask: its region crop, IoU, stability, object score
    low_res_logits: torch.Tensor    # 1 x 1 x L x L (NO_OBJ_SCORE where absent)
    object_score_logit: float       # > 0: the object is in the frame
    iou: float                      # the decoder's IoU prediction of the chosen mask

    @property
    def present(self) -> bool:
        return self.object_score_logit > 0

    @property
    def mask(self) -> np.ndarray:
        """H x W bool at the frame's original size (made from the crop)."""
        return self.prediction.mask(0)


@dataclass
class _Memory:
    """What one frame leaves in an object's memory bank."""
    features: torch.Tensor          # 1 x C_mem x h x w (bfloat16)
    obj_ptr: torch.Tensor           # 1 x C


@dataclass
class _ObjectState:
    cond: "OrderedDict[int, _Memory]" = field(default_factory=OrderedDict)
    recent: Dict[int, _Memory] = field(default_factory=dict)
    # The latest output: its frame, low-res logits (the mask prompt of a refinement), and the
    # points given on that frame (refinements add to them).
    frame_idx: int = -1
    low_res: Optional[torch.Tensor] = None
    points: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    result: Optional[TrackResult] = None


class Sam2VideoTracker:
    """Streaming multi-object tracker over a SAM 2 model (see the module docstring).

    Args:
        predictor: the Sam2Predictor that encodes the frames.
        max_cond_frames: conditioning frames kept per object (>= 1).
        num_maskmem: spatial memories per object including the conditioning slot (at most the
            model's, 7 for the official models).
        max_obj_ptrs: object pointers per object (at most 16, the model's).
        refinements_as_conditioning: a refinement on a tracked frame makes it a conditioning frame
            (kept long-term) instead of an ordinary memory (Meta's default: not).
    """

    def __init__(self, predictor: Sam2Predictor, max_cond_frames: int = 8, num_maskmem: Optional[int] = None,
                 max_obj_ptrs: int = 16, refinements_as_conditioning: bool = False) -> None:
        self.predictor = predictor
        self.model: SAM2 = predictor.model
        if max_cond_frames < 1:
            raise ValueError("max_cond_frames must be at least 1")
        self.max_cond_frames = max_cond_frames
        self.num_maskmem = min(num_maskmem or self.model.num_maskmem, self.model.num_maskmem)
        self.max_obj_ptrs = max(2, min(max_obj_ptrs, self.model.max_obj_ptrs_in_encoder))
        self.refinements_as_conditioning = refinements_as_conditioning
        self.objects: "OrderedDict[int, _ObjectState]" = OrderedDict()
        self._pos_cache: Dict[Tuple[int, int], torch.Tensor] = {}

    # ---- objects ------------------------------------------------------------------------
    @property
    def object_ids(self) -> List[int]:
        return list(self.objects)

    @torch.inference_mode()
    def add_object(self, obj_id: int, embedding: ImageEmbedding, frame_idx: int, points: Optional[np.ndarray] = None,
                   labels: Optional[np.ndarray] = None, box: Optional[np.ndarray] = None,
                   mask: Optional[np.ndarray] = None) -> TrackResult:
        """Start (or restart) tracking obj_id from a prompt on this frame: points N x 2 (x, y pixels)
        with labels N (1 fg, 0 bg), and/or a box (x0, y0, x1, y1), or a binary H x W mask."""
        if obj_id in self.objects:
            del self.objects[obj_id]
        state = _ObjectState()
        self.objects[obj_id] = state
        try:
            return self._prompt(obj_id, state, embedding, frame_idx, points, labels, box, mask, init=True)
        except Exception:
            del self.objects[obj_id]
            raise

    @torch.inference_mode()
    def refine(self, obj_id: int, embedding: ImageEmbedding, frame_idx: int, points: Optional[np.ndarray] = None,
               labels: Optional[np.ndarray] = None, box: Optional[np.ndarray] = None,
               mask: Optional[np.ndarray] = None) -> TrackResult:
        """Correct obj_id on this frame: the points add to those already given on it (a box or a
        mask replaces them); the current mask is the mask prompt."""
        state = self._state(obj_id)
        if frame_idx < state.frame_idx:
            raise InputError(f"object {obj_id} is at frame {state.frame_idx}; cannot refine earlier frame {frame_idx}")
        init = frame_idx in state.cond and len(state.cond) == 1 and not state.recent
        return self._prompt(obj_id, state, embedding, frame_idx, points, labels, box, mask, init=init)

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking obj_id and free its memory."""
        self._state(obj_id)
        del self.objects[obj_id]

    def reset(self) -> None:
        self.objects.clear()

    # ---- tracking -----------------------------------------------------------------------
    @torch.inference_mode()
    def track(self, embedding: ImageEmbedding, frame_idx: int) -> Dict[int, TrackResult]:
        """Every object on this frame: tracked from its memory, or the prompt result for objects
        prompted on it. Frames must come in increasing order per object."""
        results = {}
        for obj_id, state in self.objects.items():
            if state.frame_idx == frame_idx and state.result is not None:
                results[obj_id] = state.result
                continue
            if frame_idx < state.frame_idx:
                raise InputError(f"frame {frame_idx} is older than object {obj_id}'s frame {state.frame_idx}")
            feats = self._conditioned(embedding, state, frame_idx)
            # SAM 2 tracks with the multimask output (no points: 0 <= 1 point) and keeps the best.
            out = self.model.forward_sam_heads(feats, high_res_features=list(embedding.high_res_features),
                                               multimask_output=True)
            state.points = None
            results[obj_id] = self._finish(obj_id, state, embedding, frame_idx, out, from_points=False, cond=False)
        return results

    def memory_size(self, obj_id: int) -> Tuple[int, int]:
        """(conditioning frames, recent frames) held for obj_id."""
        state = self._state(obj_id)
        return len(state.cond), len(state.recent)

    # ---- internals ----------------------------------------------------------------------
    def _state(self, obj_id: int) -> _ObjectState:
        try:
            return self.objects[obj_id]
        except KeyError:
            raise KeyError(f"no tracked object with id {obj_id}") from None

    def _prompt(self, obj_id: int, state: _ObjectState, embedding: ImageEmbedding, frame_idx: int, points, labels,
                box, mask, init: bool) -> TrackResult:
        if embedding.high_res_features is None or embedding.backbone_features is None:
            raise InputError("the tracker needs a frame encoded by a SAM 2 predictor")
        size = embedding.original_size
        p = self.predictor
        if mask is not None:
            if points is not None or box is not None:
                raise InputError("give either a mask or points / a box")
            m = np.asarray(mask)
            if m.shape != tuple(size):
                raise InputError(f"mask must be {size[0]} x {size[1]} (the frame), got {m.shape}")
            m = torch.as_tensor(m.astype(np.float32), device=p.device)[None, None]
            s = self.model.image_size
            if tuple(m.shape[-2:]) != (s, s):
                m = (F.interpolate(m, (s, s), mode="bilinear", align_corners=False, antialias=True) >= 0.5).float()
            if init:
                state.cond.pop(frame_idx, None)
            # The mask is the output; the pointer comes from the raw (unconditioned) features.
            out = self.model.use_mask_as_output(embedding.backbone_features, list(embedding.high_res_features), m)
            state.points = None
            return self._finish(obj_id, state, embedding, frame_idx, out, from_points=True, cond=init or
                                self.refinements_as_conditioning)
        coords_list, labels_list = [], []
        if box is not None:
            b = validate_boxes(np.asarray(box, dtype=np.float64).reshape(1, 4), size)
            coords_list.append(p.transform_boxes(b, size).reshape(2, 2))
            labels_list.append(np.array([2, 3]))
        if points is not None:
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            lab = np.asarray(labels if labels is not None else np.ones(len(pts))).reshape(-1)
            validate_points(pts[None], lab[None], size)
            coords_list.append(p.transform_coords(pts, size))
            labels_list.append(lab)
        if not coords_list:
            raise InputError("give points, a box or a mask")
        coords = torch.as_tensor(np.concatenate(coords_list), dtype=torch.float32, device=p.device)[None]
        labs = torch.as_tensor(np.concatenate(labels_list), dtype=torch.int32, device=p.device)[None]
        prev = None
        if state.frame_idx != frame_idx:
            state.points = None
        if box is None and state.points is not None:
            coords = torch.cat([state.points[0], coords], dim=1)
            labs = torch.cat([state.points[1], labs], dim=1)
        if state.frame_idx == frame_idx and state.low_res is not None:
            prev = state.low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        state.points = (coords, labs)
        feats = self._features_for(embedding, state, frame_idx, init)
        n = labs.shape[1]
        multimask = n <= 1  # multimask_output_in_sam, also when tracking (SAM 2's settings), for 0-1 points
        out = self.model.forward_sam_heads(feats, coords, labs, mask_inputs=prev,
                                           high_res_features=list(embedding.high_res_features),
                                           multimask_output=multimask)
        return self._finish(obj_id, state, embedding, frame_idx, out, from_points=True,
                            cond=init or self.refinements_as_conditioning)

    def _features_for(self, embedding: ImageEmbedding, state: _ObjectState, frame_idx: int, init: bool) -> torch.Tensor:
        if init:
            # No memory yet: the image embedding plus the no-memory embedding.
            state.cond.pop(frame_idx, None)
            return embedding.features
        return self._conditioned(embedding, state, frame_idx)

    def _pos(self, feats: torch.Tensor) -> torch.Tensor:
        key = tuple(feats.shape[-2:])
        if key not in self._pos_cache:
            self._pos_cache[key] = self.model.image_encoder.neck.position_encoding(feats[:1])
        return self._pos_cache[key]

    def _mem_pos(self, mem: torch.Tensor) -> torch.Tensor:
        key = ("mem",) + tuple(mem.shape[-2:])
        if key not in self._pos_cache:
            self._pos_cache[key] = self.model.memory_encoder.position_encoding(mem[:1].float())
        return self._pos_cache[key]

    def _conditioned(self, embedding: ImageEmbedding, state: _ObjectState, frame_idx: int) -> torch.Tensor:
        """Memory attention of the frame's features against the object's bank (frames before
        frame_idx and the conditioning frames)."""
        raw = embedding.backbone_features
        memories: List[Tuple[int, torch.Tensor, torch.Tensor]] = []
        for t, mem in state.cond.items():
            if t != frame_idx:
                memories.append((0, mem.features, self._mem_pos(mem.features)))
        for t_pos in range(1, self.num_maskmem):
            t = frame_idx - (self.num_maskmem - t_pos)
            mem = state.recent.get(t)
            if mem is not None:
                memories.append((t_pos + self.model.num_maskmem - self.num_maskmem, mem.features,
                                 self._mem_pos(mem.features)))
        ptrs = [(frame_idx - t, mem.obj_ptr) for t, mem in state.cond.items() if t < frame_idx]
        for d in range(1, self.max_obj_ptrs):
            mem = state.recent.get(frame_idx - d)
            if mem is not None:
                ptrs.append((d, mem.obj_ptr))
        if not memories and not ptrs:
            return embedding.features
        return self.model.condition_on_memory(raw, self._pos(raw), memories, ptrs, self.max_obj_ptrs - 1)

    def _finish(self, obj_id: int, state: _ObjectState, embedding: ImageEmbedding, frame_idx: int,
                out: SAM2HeadsOutput, from_points: bool, cond: bool) -> TrackResult:
        low = out["low_res_masks"]
        obj_logit = out["object_score_logits"]
        # The frame's memory, from the chosen mask upsampled to the input size (binarized for
        # prompted frames, as Meta's video predictor does).
        s = self.model.image_size
        high = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
        features, _ = self.model.encode_memory(embedding.backbone_features, high, obj_logit, binarize=from_points)
        memory = _Memory(features.to(torch.bfloat16), out["obj_ptr"])
        if cond:
            state.recent.pop(frame_idx, None)
            state.cond[frame_idx] = memory
            while len(state.cond) > self.max_cond_frames:
                drop = list(state.cond)[1] if len(state.cond) > 1 else list(state.cond)[0]
                del state.cond[drop]
        elif frame_idx in state.cond:
            state.cond[frame_idx] = memory
        else:
            state.recent[frame_idx] = memory
        # The next frame reads frames back to next - (keep): older ones go.
        keep = max(self.num_maskmem - 1, self.max_obj_ptrs - 1)
        for t in [t for t in state.recent if t <= frame_idx - keep]:
            del state.recent[t]
        state.frame_idx = frame_idx
        state.low_res = low
        ious = out["ious"]
        iou = float(ious.max()) if ious.shape[-1] > 1 else float(ious.reshape(-1)[0])
        score = float(obj_logit.reshape(-1)[0])
        # The mask as a region crop, with the image predictor's geometry and stability score.
        crops, stab = self.predictor.mask_crops(low[0].float(), embedding)
        pred = MaskPrediction(None, np.array([iou], np.float32),
                              low[0].float().clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP).cpu().numpy(), stab, crops,
                              np.array([score], np.float32))
        result = TrackResult(obj_id, frame_idx, pred, low, score, iou)
        state.result = result
        return result
