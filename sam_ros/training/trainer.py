"""The training loop: the Segment Anything recipe on procedural scenes or a user's dataset.

One step: encode a batch of images once; per image, simulate an interactive session for several
target masks at a time (batched through the decoder): a first click (multimask output) or a
noisy box (single output), then up to `max_extra_clicks` corrective clicks sampled from the error
region, each with the previous low-res logits as the mask prompt. One iteration per session (the
first or the last, alternately) is back-propagated, the others only produce the next prompt: on
a CPU the decoder's backward pass is the cost that bounds how many sessions we see. Focal+dice
through the lowest-loss mask and the IoU head trained with MSE.

Resumable: `out_dir/checkpoint.pt` holds model, optimiser, step and config; data and prompts
are derived from (seed, step), so a resumed run continues exactly where it stopped.
"""
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data import scenes as scene_gen
from ..engine.predictor import SamPredictor
from ..model.build import build_sam
from ..model.checkpoint import load_model, save_safetensors
from ..model.sam import Sam
from .datasets import MaskJsonDataset, ProceduralDataset, Sample
from .evaluation import evaluate, evaluate_frame
from .losses import sam_loss
from .simulation import noisy_box, random_error_click, random_point_in


@dataclass
class TrainConfig:
    out_dir: str
    model: str = "sam_ros_tiny"          # registry name of a fresh model (ignored with init)
    init: Optional[str] = None           # start from this checkpoint (official, ours, or a training checkpoint)
    dataset: Optional[str] = None        # COCO instances JSON or SA-1B folder; None = procedural scenes
    image_root: Optional[str] = None
    steps: int = 3000
    batch_images: int = 4
    prompts_per_image: int = 8
    max_extra_clicks: int = 4
    box_prob: float = 0.5
    # Curriculum: single clicks only for the first `points_only_steps` (a model trained from
    # scratch learns to localise a click much sooner without boxes and corrective clicks mixed
    # in), then boxes ramp in to box_prob over `ramp_steps` and corrective clicks are enabled.
    points_only_steps: int = 400
    ramp_steps: int = 400
    # Progressive resizing: the first `small_steps` steps run at `small_size` px input (same
    # weights, a smaller embedding grid; 3-4x cheaper steps), the rest at the model's size.
    # TinyViT encoders only (SAM's ViT has an absolute position table per grid size).
    small_size: int = 0
    small_steps: int = 0
    lr: float = 5e-4
    min_lr_frac: float = 0.05
    weight_decay: float = 0.05
    warmup: int = 100
    grad_clip: float = 1.0
    freeze_encoder: bool = False
    bf16: bool = True                    # bfloat16 autocast (fast matrix units on recent CPUs/GPUs)
    checkpoint_every: int = 200
    eval_every: int = 500
    eval_scenes: int = 16
    seed: int = 0
    device: str = "cpu"


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _to_model_frame(sample: Sample, img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Resize an image and its masks so the longest side is img_size."""
    h, w = sample.image.shape[:2]
    scale = img_size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    if (nh, nw) == (h, w):
        return sample.image, sample.masks
    image = cv2.resize(sample.image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    masks = np.stack([cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
                      for m in sample.masks]) if len(sample.masks) else np.zeros((0, nh, nw), bool)
    return image, masks


class Trainer:
    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.log = log
        self.device = torch.device(cfg.device)
        os.makedirs(cfg.out_dir, exist_ok=True)
        self.ckpt_path = os.path.join(cfg.out_dir, "checkpoint.pt")
        self.model: Sam = load_model(cfg.init) if cfg.init else build_sam(cfg.model)
        self.model.to(self.device)
        self.img_size = self.model.img_size
        self.low_res = self.model.prompt_encoder.mask_input_size[0]
        if cfg.freeze_encoder:
            for p in self.model.image_encoder.parameters():
                p.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
        if cfg.dataset:
            self.data = MaskJsonDataset(cfg.dataset, cfg.image_root, split="train")
            self.holdout = MaskJsonDataset(cfg.dataset, cfg.image_root, split="holdout")
            if len(self.data) == 0:
                raise ValueError(f"no training images with masks in {cfg.dataset}")
        else:
            self.data = ProceduralDataset(self.img_size)
            self.holdout = None
        self.small: Optional[Sam] = None
        if cfg.small_size and cfg.small_steps:
            self.small = _resized_view(self.model, cfg.small_size).to(self.device)
            self.small_data = self.data if cfg.dataset else ProceduralDataset(cfg.small_size)
        self.step = 0
        self.history: List[Dict[str, float]] = []
        if os.path.exists(self.ckpt_path):
            self._resume()

    # ---- checkpoints ------------------------------------------------------------------------
    def _resume(self) -> None:
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = json.loads(state.get("history", "[]"))
        self.log(f"resumed from {self.ckpt_path} at step {self.step}")

    def save_checkpoint(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
                 "config": self.model.config.to_json(), "train_config": json.dumps(dataclasses.asdict(self.cfg)),
                 "history": json.dumps(self.history)}
        tmp = self.ckpt_path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)

    def export(self, path: str, metadata: Optional[Dict[str, str]] = None) -> None:
        """The trained weights as safetensors, stored in float16 (half the size; the model loads
        them back into float32)."""
        save_safetensors(self.model, path, metadata, dtype=torch.float16)

    # ---- one step -----------------------------------------------------------------------------
    def _net(self, step: int) -> Sam:
        """The model trained at this step (a smaller-input view of the same weights early on)."""
        return self.small if self.small is not None and step < self.cfg.small_steps else self.model

    def _batch(self, step: int, rng: np.random.Generator, net: Sam):
        images, valids, targets = [], [], []
        s = net.img_size
        data = self.small_data if net is self.small else self.data
        for b in range(self.cfg.batch_images):
            index = (self.cfg.seed * 1_000_003 + step * self.cfg.batch_images + b) % len(data)
            sample = data.sample(index)
            image, masks = _to_model_frame(sample, s)
            if len(masks) == 0:
                continue
            k = min(self.cfg.prompts_per_image, len(masks))
            chosen = rng.choice(len(masks), size=k, replace=False)
            h, w = image.shape[:2]
            tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
            images.append(F.pad(tensor, (0, s - w, 0, s - h)))
            valid = torch.zeros(s, s)
            valid[:h, :w] = 1
            valids.append(valid)
            targets.append(masks[chosen])
        x = torch.stack(images).to(self.device)
        x = (x - net.pixel_mean) / net.pixel_std
        # Padding must be zero after normalisation, as at inference.
        x = x * torch.stack(valids).to(self.device)[:, None]
        return x, valids, targets

    def _curriculum(self, step: int):
        cfg = self.cfg
        if step < cfg.points_only_steps:
            return 0.0, 0
        ramp = min(1.0, (step - cfg.points_only_steps + 1) / max(1, cfg.ramp_steps))
        return cfg.box_prob * ramp, cfg.max_extra_clicks

    @staticmethod
    def _decode(net: Sam, features, points, labels, boxes, mask_input, multimask: bool):
        pe = net.prompt_encoder
        sparse, dense = pe(points=(points, labels) if points is not None else None, boxes=boxes, masks=mask_input)
        low, iou = net.mask_decoder(features, pe.get_dense_pe(), sparse, dense, multimask)
        return low, iou

    def train_step(self) -> Dict[str, float]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.step])
        net = self._net(self.step)
        net.train()
        x, valids, targets = self._batch(self.step, rng, net)
        s = net.img_size
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        if cfg.freeze_encoder:
            # Decoder-only fine-tuning: the encoder is a fixed feature extractor (eval-mode
            # BatchNorm statistics, no graph kept).
            net.image_encoder.eval()
            with torch.no_grad(), autocast:
                features = net.image_encoder(x)
        else:
            with autocast:
                features = net.image_encoder(x)
        total = torch.zeros((), device=self.device)
        stats = {"mask_loss": 0.0, "iou_loss": 0.0, "iou": 0.0}
        n_terms = 0
        r = 2 * net.prompt_encoder.mask_input_size[0]  # losses at twice the low-res size: cheap, sharp enough
        for b, gt_np in enumerate(targets):
            k = len(gt_np)
            gt = torch.from_numpy(gt_np).float().to(self.device)
            gt_full = F.pad(gt, (0, s - gt.shape[-1], 0, s - gt.shape[-2]))
            gt_loss = F.interpolate(gt_full[:, None], (r, r), mode="area")[:, 0]
            valid = F.interpolate(valids[b].to(self.device)[None, None], (r, r), mode="area")[0].expand(k, -1, -1)
            feat = features[b : b + 1]
            box_prob, max_extra = self._curriculum(self.step)
            use_box = rng.random() < box_prob
            if use_box:
                boxes = torch.tensor(np.stack([noisy_box(m, rng) for m in gt_np]), dtype=torch.float32,
                                     device=self.device)
                points = labels = None
            else:
                boxes = None
                points = torch.tensor(np.stack([random_point_in(m, rng) for m in gt_np])[:, None],
                                      dtype=torch.float32, device=self.device)
                labels = torch.ones(k, 1, dtype=torch.int64, device=self.device)
            extra = int(rng.integers(0, max_extra + 1))
            # One iteration per session is back-propagated (the first or the last, alternately):
            # the decoder's backward pass dominates a CPU step, and the others only make prompts.
            grad_it = 0 if extra == 0 or rng.random() < 0.5 else extra
            mask_input = None
            for it in range(1 + extra):
                grad = it == grad_it
                multimask = it == 0 and not use_box
                with torch.set_grad_enabled(grad), autocast:
                    low, iou_pred = self._decode(net, feat, points, labels, boxes, mask_input, multimask)
                low, iou_pred = low.float(), iou_pred.float()
                if grad:
                    logits = F.interpolate(low, (r, r), mode="bilinear", align_corners=False)
                    loss, mloss, iloss, _ = sam_loss(logits, iou_pred, gt_loss, valid)
                    total = total + loss
                    n_terms += 1
                    stats["mask_loss"] += float(mloss.detach())
                    stats["iou_loss"] += float(iloss.detach())
                with torch.no_grad():
                    # The mask the model ranks first is fed back and drives the next click (SAM).
                    pick = iou_pred.argmax(1)
                    chosen_low = low[torch.arange(k), pick][:, None].detach()
                    chosen = F.interpolate(chosen_low, (s, s), mode="bilinear", align_corners=False)[:, 0] > 0
                    if it == 0:
                        inter = (chosen & (gt_full > 0)).sum((-1, -2)).float()
                        union = (chosen | (gt_full > 0)).sum((-1, -2)).float().clamp(min=1)
                        stats["iou"] += float((inter / union).mean())
                if it == extra:
                    break
                # Next iteration: a click from the error region, previous logits as the mask prompt.
                h, w = gt_np.shape[-2:]
                pred = chosen[:, :h, :w].cpu().numpy()
                new = [random_error_click(pred[i], gt_np[i], rng) for i in range(k)]
                pts = torch.tensor(np.stack([p for p, _ in new])[:, None], dtype=torch.float32, device=self.device)
                labs = torch.tensor([[lab] for _, lab in new], dtype=torch.int64, device=self.device)
                points = pts if points is None else torch.cat([points, pts], dim=1)
                labels = labs if labels is None else torch.cat([labels, labs], dim=1)
                mask_input = chosen_low
        loss = total / max(1, n_terms)
        lr = _lr_at(cfg, self.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip)
        self.opt.step()
        self.step += 1
        nb = max(1, len(targets))
        return {"loss": float(loss.detach()), "mask_loss": stats["mask_loss"] / max(1, n_terms),
                "iou_loss": stats["iou_loss"] / max(1, n_terms), "train_iou": stats["iou"] / nb, "lr": lr}

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, n: Optional[int] = None) -> Dict[str, float]:
        self.model.eval()
        predictor = SamPredictor(self.model, device=self.device)
        n = n or self.cfg.eval_scenes
        try:
            if self.holdout is None:
                # Validation seeds (reserved, disjoint from training and from EVAL_SEEDS), at
                # camera resolution.
                return evaluate(predictor, scene_gen.VAL_SEEDS[:n], max_clicks=3)
            ious = []
            for i in range(min(n, len(self.holdout))):
                sample = self.holdout.sample(i)
                if len(sample.masks):
                    ious.append(evaluate_frame(predictor, sample.image, list(sample.masks), max_clicks=1)["one_click"])
            return {"miou_1click": float(np.concatenate(ious).mean()) if ious else float("nan")}
        finally:
            # SamPredictor casts parts to its dtypes; training continues in float32.
            self.model.float()
            self.model.train()

    # ---- loop -----------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> Dict[str, float]:
        from tqdm import tqdm

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, dynamic_ncols=True, desc="train")
        ema: Dict[str, float] = {}
        t0 = time.time()
        last = {}
        while self.step < cfg.steps:
            stats = self.train_step()
            for k, v in stats.items():
                ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
            bar.update(1)
            bar.set_postfix(loss=f"{ema['loss']:.3f}", iou=f"{ema['train_iou']:.3f}", lr=f"{stats['lr']:.1e}")
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                last = self.validate()
                row = {"step": self.step, "elapsed_s": round(time.time() - t0, 1), **{k: round(v, 4) for k, v in ema.items()},
                       **{f"val_{k}": round(v, 4) for k, v in last.items()}}
                self.history.append(row)
                self.log(json.dumps(row))
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        return last


def _resized_view(model: Sam, img_size: int) -> Sam:
    """A model for another input size that shares every parameter and buffer tensor with `model`
    (training one trains the other). TinyViT encoders only."""
    from dataclasses import replace

    from ..model.build import TinyViTConfig

    if not isinstance(model.config.encoder, TinyViTConfig):
        raise ValueError("progressive resizing needs a TinyViT encoder (ViT has a position table per grid size)")
    small = build_sam(replace(model.config, img_size=img_size))
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for mod_name, module in small.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, _ in list(module.named_parameters(recurse=False)):
            setattr(module, name, params[prefix + name])
        for name, buf in list(module.named_buffers(recurse=False)):
            other = buffers.get(prefix + name)
            if other is not None and other.shape == buf.shape:
                module._buffers[name] = other
    return small
