"""The training recipe: losses and prompt simulation on hand-made cases, a short training run, the
shipped default weights, and fine-tuning from a checkpoint on a small COCO-format dataset."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from sam_ros.data import scenes
from sam_ros.engine.factory import default_weights
from sam_ros.engine.mask_utils import encode_rle, mask_to_rle
from sam_ros.engine.predictor import SamPredictor
from sam_ros.model.checkpoint import load_model
from sam_ros.training.evaluation import evaluate
from sam_ros.training.losses import dice_loss, focal_loss, mask_iou, sam_loss
from sam_ros.training.simulation import center_click, corrective_click, noisy_box, random_error_click
from sam_ros.training.trainer import TrainConfig, Trainer


def _square(h=40, w=40, y0=10, y1=30, x0=10, x1=30):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ---- losses -------------------------------------------------------------------------------------

def test_min_over_masks_picks_the_lowest_loss_mask():
    gt = torch.from_numpy(_square()).float()[None]          # 1 x H x W
    valid = torch.ones_like(gt)
    good = gt * 20 - 10                                      # right mask, confident
    half = good.clone()
    half[:, :, 20:] = -10                                    # half of it
    wrong = -good                                            # the complement
    logits = torch.stack([wrong, half, good], dim=1)         # 1 x 3 x H x W
    total, mask_loss, iou_loss, best = sam_loss(logits, torch.zeros(1, 3), gt, valid)
    assert best.tolist() == [2]
    per_mask = 20 * focal_loss(logits, gt[:, None].expand_as(logits), valid[:, None].expand_as(logits)) + \
        dice_loss(logits, gt[:, None].expand_as(logits), valid[:, None].expand_as(logits))
    assert mask_loss == pytest.approx(float(per_mask[0, 2]))
    assert float(per_mask[0, 2]) < float(per_mask[0, 1]) < float(per_mask[0, 0])
    # The IoU head is trained towards each mask's actual IoU (1, 0.5, 0 here).
    actual = mask_iou(logits, gt[:, None].expand_as(logits), valid[:, None].expand_as(logits))
    assert actual[0].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert iou_loss == pytest.approx(((torch.zeros(3) - actual[0]) ** 2).mean().item())


def test_gradient_flows_only_through_the_best_mask():
    gt = torch.from_numpy(_square()).float()[None]
    logits = torch.stack([-(gt * 20 - 10), gt * 20 - 10, torch.zeros_like(gt)], dim=1).requires_grad_(True)
    total, *_ = sam_loss(logits, torch.zeros(1, 3), gt, torch.ones_like(gt))
    total.backward()
    g = logits.grad.abs().sum((-1, -2))[0]
    assert g[1] > 0 and g[0] == 0 and g[2] == 0


def test_padding_is_ignored_by_the_losses():
    gt = torch.from_numpy(_square()).float()[None]
    valid = torch.zeros_like(gt)
    valid[:, :, :30] = 1
    logits = (gt * 20 - 10)[:, None].clone()
    logits[..., 30:] = 50  # garbage on the padding
    assert float(focal_loss(logits, gt[:, None], valid[:, None])) < 1e-3
    assert float(dice_loss(logits, gt[:, None], valid[:, None])) < 1e-3


# ---- prompt simulation -------------------------------------------------------------------------

def test_clicks_land_in_the_error_region():
    rng = np.random.default_rng(0)
    gt = _square()
    pred = _square(x1=20)  # misses the right half: false negatives only
    for _ in range(50):
        (x, y), label = random_error_click(pred, gt, rng)
        assert label == 1 and gt[int(y), int(x)] and not pred[int(y), int(x)]
    pred = _square(x1=38)  # spills over on the right: false positives only
    for _ in range(50):
        (x, y), label = random_error_click(pred, gt, rng)
        assert label == 0 and pred[int(y), int(x)] and not gt[int(y), int(x)]


def test_evaluation_clicks():
    gt = _square()
    assert center_click(gt).tolist() in ([19, 19], [20, 20], [19, 20], [20, 19])
    pred = _square(x1=20)
    (x, y), label = corrective_click(pred, gt)
    assert label == 1 and 20 <= x < 30 and 10 <= y < 30
    pred = gt.copy()
    pred[0:10, 0:40] = True  # a big false-positive band
    (x, y), label = corrective_click(pred, gt)
    assert label == 0 and y < 10


def test_noisy_box_stays_near_the_object_and_inside_the_image():
    rng = np.random.default_rng(1)
    gt = _square(100, 100, 20, 60, 30, 80)
    for _ in range(100):
        b = noisy_box(gt, rng)
        assert 0 <= b[0] <= b[2] <= 100 and 0 <= b[1] <= b[3] <= 100
        assert np.abs(b - [30, 20, 80, 60]).max() <= 20.0 + 1e-9


# ---- training runs -------------------------------------------------------------------------------

def test_short_training_run_lowers_the_loss_and_raises_miou(tmp_path):
    """A few dozen steps on a handful of scenes: the recipe must learn (fixed seeds)."""
    torch.manual_seed(0)
    cfg = TrainConfig(out_dir=str(tmp_path), steps=60, batch_images=2, prompts_per_image=6, lr=5e-4, warmup=5,
                      points_only_steps=60, checkpoint_every=1000, eval_every=1000)
    tr = Trainer(cfg, log=lambda s: None)
    from sam_ros.training.datasets import ProceduralDataset

    seeds = [scenes.train_seed(i) for i in range(4)]
    tr.data = ProceduralDataset(tr.img_size, seeds=seeds)
    losses, ious = [], []
    for _ in range(cfg.steps):
        st = tr.train_step()
        losses.append(st["loss"])
        ious.append(st["train_iou"])
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert np.mean(ious[-10:]) > np.mean(ious[:10]) + 0.1
    # Resumable: the checkpoint holds the step and continues from it.
    tr.save_checkpoint()
    again = Trainer(cfg, log=lambda s: None)
    assert again.step == cfg.steps


needs_weights = pytest.mark.skipif(default_weights() is None, reason="the embedded default weights are not built yet")


@needs_weights
def test_shipped_default_weights_segment_held_out_scenes():
    """A fast, real quality check of the shipped model on 8 held-out scenes. The floors sit about
    0.05 under what the shipped weights score here (0.554 / 0.713 / 0.755; model card: 200
    scenes); they catch a broken model, loader or predictor, and the previous (one-hour) weights
    (0.472 / 0.625 / 0.678) would fail them."""
    model = load_model(default_weights())
    assert model.config.img_size == 384
    assert os.path.getsize(default_weights()) <= 20 * 1024 * 1024
    metrics = evaluate(SamPredictor(model), scenes.EVAL_SEEDS[:8], max_clicks=1)
    assert metrics["miou_1click"] >= 0.50, metrics
    assert metrics["miou_oracle"] >= 0.65, metrics
    assert metrics["miou_box"] >= 0.70, metrics


@needs_weights
@pytest.mark.xfail(strict=True, reason="issue 4 asks for >= 0.75 1-click mIoU here; two hours of CPU "
                   "training reach about 0.55 (see the model card)")
def test_shipped_default_weights_reach_the_issue_bar():
    metrics = evaluate(SamPredictor(load_model(default_weights())), scenes.EVAL_SEEDS[:8], max_clicks=1)
    assert metrics["miou_1click"] >= 0.75, metrics


def _write_coco(folder, seeds, size=(192, 256)):
    """A small COCO instances file of procedural scenes with RLE masks of whole objects."""
    images, anns = [], []
    for i, seed in enumerate(seeds):
        sc = scenes.generate_scene(seed, height=size[0], width=size[1])
        name = f"img_{i}.png"
        cv2.imwrite(os.path.join(folder, name), cv2.cvtColor(sc.image, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": name, "height": size[0], "width": size[1]})
        for j in np.flatnonzero(sc.level == 0):
            m = sc.masks[j]
            ys, xs = np.nonzero(m)
            anns.append({"id": len(anns), "image_id": i, "category_id": 1, "iscrowd": 0, "area": int(m.sum()),
                         "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                         "segmentation": encode_rle(mask_to_rle(m))})
    path = os.path.join(folder, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}, f)
    return path


@needs_weights
def test_fine_tuning_from_a_checkpoint_improves_its_miou(tmp_path):
    """Start from the shipped checkpoint and fine-tune the decoder only (frozen encoder) on a tiny
    COCO-format dataset whose annotations are whole objects: mIoU on the dataset's held-out part
    goes up (the model learns which granularity this dataset means)."""
    torch.manual_seed(0)
    ckpt = default_weights()
    data_dir = tmp_path / "coco"
    data_dir.mkdir()
    coco = _write_coco(str(data_dir), [scenes.train_seed(100 + i) for i in range(30)])
    from sam_ros.training.datasets import MaskJsonDataset
    from sam_ros.training.evaluation import evaluate_frame

    held = MaskJsonDataset(coco, split="holdout", holdout=0.3)
    train = MaskJsonDataset(coco, split="train", holdout=0.3)
    assert len(held) >= 8 and len(train) >= 12

    def held_out_miou(model):
        p = SamPredictor(model)
        vals = [evaluate_frame(p, s.image, list(s.masks), max_clicks=1)["one_click"] for s in
                (held.sample(i) for i in range(len(held)))]
        return float(np.concatenate(vals).mean())

    before = held_out_miou(load_model(ckpt))
    cfg = TrainConfig(out_dir=str(tmp_path / "ft"), init=ckpt, dataset=coco, steps=100, batch_images=2,
                      prompts_per_image=6, lr=1e-4, warmup=2, freeze_encoder=True, points_only_steps=100,
                      checkpoint_every=1000, eval_every=1000)
    ft = Trainer(cfg, log=lambda s: None)
    ft.data = train
    enc_before = {k: v.clone() for k, v in ft.model.image_encoder.state_dict().items()}
    for _ in range(cfg.steps):
        ft.train_step()
    for k, v in ft.model.image_encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), f"frozen encoder changed: {k}"
    after = held_out_miou(ft.model.eval())
    assert after > before + 0.03, (before, after)
