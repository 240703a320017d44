"""Evaluation on held-out scenes, with the interactive protocol of the Segment Anything paper.

For every target segment (whole objects, parts and subparts large enough to click):
- 1-click: a click at the centre of the object (farthest from its boundary), multimask output,
  the mask the IoU head ranks first ("1-click") and the best of the three ("oracle");
- box: the tight bounding box, single-mask output;
- k-click: further clicks at the centre of the larger error region of the previous prediction,
  with the previous low-res logits fed back as the mask prompt (single-mask output after the
  first click); mIoU after 3 and 5 clicks;
- calibration: Pearson correlation of predicted and actual IoU over all multimask candidates.
All prompts of one frame decode in one batch.
"""
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..data import scenes as scene_gen
from ..engine.predictor import SamPredictor
from .simulation import center_click, corrective_click


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def eval_targets(scene, min_area_frac: float) -> List[int]:
    h, w = scene.image.shape[:2]
    areas = scene.masks.reshape(len(scene.masks), -1).sum(1)
    return [i for i in range(len(scene.masks)) if areas[i] >= min_area_frac * h * w]


def evaluate_frame(predictor: SamPredictor, image: np.ndarray, gts: Sequence[np.ndarray],
                   max_clicks: int = 5) -> Dict[str, np.ndarray]:
    """Per-target metrics on one image: arrays of length T (and T x 3 for calibration)."""
    emb = predictor.encode(image)
    t = len(gts)
    gts = [g.astype(bool) for g in gts]
    clicks = np.stack([center_click(g) for g in gts])[:, None, :]  # T x 1 x 2
    labels = np.ones((t, 1), np.int64)
    first = predictor.decode(emb, clicks, labels, multimask_output=True)
    cand_iou = np.array([[iou(first.masks[i, j], gts[i]) for j in range(3)] for i in range(t)])
    pick = first.iou_predictions.argmax(1)
    out = {
        "one_click": cand_iou[np.arange(t), pick],
        "oracle": cand_iou.max(1),
        "pred_iou": first.iou_predictions,
        "actual_iou": cand_iou,
    }
    boxes = np.stack([mask_box(g) for g in gts])
    box_pred = predictor.decode(emb, box=boxes, multimask_output=False)
    out["box"] = np.array([iou(box_pred.masks[i, 0], gts[i]) for i in range(t)])

    per_click = [out["one_click"]]
    prev_masks = first.masks[np.arange(t), pick]
    prev_logits = first.low_res_logits[np.arange(t), pick][:, None]
    for _ in range(2, max_clicks + 1):
        new = [corrective_click(prev_masks[i], gts[i]) for i in range(t)]
        clicks = np.concatenate([clicks, np.stack([p for p, _ in new])[:, None]], axis=1)
        labels = np.concatenate([labels, np.array([[lab] for _, lab in new])], axis=1)
        pred = predictor.decode(emb, clicks, labels, mask_input=prev_logits, multimask_output=False)
        prev_masks = pred.masks[:, 0]
        prev_logits = pred.low_res_logits[:, :1]
        per_click.append(np.array([iou(prev_masks[i], gts[i]) for i in range(t)]))
    out["clicks"] = np.stack(per_click, axis=1)  # T x max_clicks
    return out


def evaluate(predictor: SamPredictor, seeds: Iterable[int], height: int = 480, width: int = 640,
             max_clicks: int = 5, min_area_frac: float = 0.005, progress: Optional[callable] = None
             ) -> Dict[str, float]:
    """Metrics over the procedural scenes of the given seeds (held-out: scenes.EVAL_SEEDS)."""
    rows: Dict[str, list] = {}
    levels: List[np.ndarray] = []
    seeds = list(seeds)
    for n, seed in enumerate(seeds):
        scene = scene_gen.generate_scene(seed, height=height, width=width)
        idx = eval_targets(scene, min_area_frac)
        if not idx:
            continue
        res = evaluate_frame(predictor, scene.image, [scene.masks[i] for i in idx], max_clicks)
        for k, v in res.items():
            rows.setdefault(k, []).append(v)
        levels.append(scene.level[idx])
        if progress:
            progress(n + 1, len(seeds))
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    level = np.concatenate(levels)
    clicks = cat["clicks"]
    pred, actual = cat["pred_iou"].ravel(), cat["actual_iou"].ravel()
    metrics = {
        "targets": float(len(level)),
        "miou_1click": float(cat["one_click"].mean()),
        "miou_oracle": float(cat["oracle"].mean()),
        "miou_box": float(cat["box"].mean()),
        "iou_pred_corr": float(np.corrcoef(pred, actual)[0, 1]) if pred.std() > 0 and actual.std() > 0 else 0.0,
        "iou_pred_mae": float(np.abs(pred - actual).mean()),
    }
    for k in range(1, clicks.shape[1] + 1):
        metrics[f"miou_{k}click_interactive"] = float(clicks[:, k - 1].mean())
    for lv, name in enumerate(("whole", "part", "subpart")):
        sel = level == lv
        if sel.any():
            metrics[f"miou_1click_{name}"] = float(cat["one_click"][sel].mean())
            metrics[f"miou_oracle_{name}"] = float(cat["oracle"][sel].mean())
            metrics[f"targets_{name}"] = float(sel.sum())
    return metrics
