"""Train or fine-tune a SAM model with the Segment Anything recipe.

The embedded default model's first stage (about an hour on 2 CPU cores; the two continuations
that produced the shipped weights are in sam_ros/weights/MODEL_CARD.md):
    python -m sam_ros.tools.train --out runs/default --steps 3000

Fine-tune a checkpoint's decoder on your own objects (COCO instances JSON or SA-1B folder):
    python -m sam_ros.tools.train --out runs/mine --init sam_vit_b_01ec64.pth \\
        --dataset annotations.json --image-root images/ --freeze-encoder --steps 500

Re-running the same command resumes from <out>/checkpoint.pt.
"""
import argparse
import dataclasses
import json
import sys

import torch

from ..training.trainer import TrainConfig, Trainer


def main(argv=None) -> int:
    defaults = TrainConfig(out_dir="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, history)")
    p.add_argument("--model", default=defaults.model, help="registry name of a fresh model")
    p.add_argument("--init", help="start from this checkpoint (.pth/.pt/.safetensors)")
    p.add_argument("--dataset", help="COCO instances JSON or SA-1B folder (default: procedural scenes)")
    p.add_argument("--image-root", help="image folder of a COCO JSON (default: its folder)")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-images", type=int, default=defaults.batch_images)
    p.add_argument("--prompts-per-image", type=int, default=defaults.prompts_per_image)
    p.add_argument("--max-extra-clicks", type=int, default=defaults.max_extra_clicks)
    p.add_argument("--points-only-steps", type=int, default=defaults.points_only_steps,
                   help="curriculum: single clicks only for this many steps")
    p.add_argument("--ramp-steps", type=int, default=defaults.ramp_steps, help="then boxes ramp in over this many")
    p.add_argument("--small-size", type=int, default=defaults.small_size,
                   help="progressive resizing: train at this input size first (TinyViT models)")
    p.add_argument("--small-steps", type=int, default=defaults.small_steps, help="... for this many steps")
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--warmup", type=int, default=defaults.warmup)
    p.add_argument("--freeze-encoder", action="store_true", help="train the prompt encoder and mask decoder only")
    p.add_argument("--no-bf16", action="store_true", help="train in float32 instead of bfloat16 autocast")
    p.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    p.add_argument("--eval-every", type=int, default=defaults.eval_every)
    p.add_argument("--eval-scenes", type=int, default=defaults.eval_scenes)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--export", help="write the final weights to this .safetensors file")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig(out_dir=a.out, model=a.model, init=a.init, dataset=a.dataset, image_root=a.image_root,
                      steps=a.steps, batch_images=a.batch_images, prompts_per_image=a.prompts_per_image,
                      max_extra_clicks=a.max_extra_clicks, points_only_steps=a.points_only_steps,
                      ramp_steps=a.ramp_steps, small_size=a.small_size, small_steps=a.small_steps, lr=a.lr, warmup=a.warmup,
                      freeze_encoder=a.freeze_encoder, bf16=not a.no_bf16, checkpoint_every=a.checkpoint_every,
                      eval_every=a.eval_every, eval_scenes=a.eval_scenes, seed=a.seed, device=a.device)
    trainer = Trainer(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    final = trainer.run(progress=not a.no_progress)
    if a.export:
        meta = {"train_config": json.dumps(dataclasses.asdict(cfg)), "final_validation": json.dumps(final)}
        trainer.export(a.export, meta)
        print(f"wrote {a.export}", file=sys.stderr)
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
