"""Render an SA-1B style annotation file (image + masks) to a PNG for a person to look at.

    python -m sam_ros.tools.view_masks dataset/frame_000010.json -o view.png
"""
import argparse
import json
import os
import sys

import cv2

from ..engine.mask_utils import rle_to_mask


def render(json_path: str, out_png: str) -> str:
    """Draw an annotation file's masks over its image (the viewer)."""
    from ..engine.visualize import draw_masks

    with open(json_path) as f:
        record = json.load(f)
    image_path = os.path.join(os.path.dirname(json_path), record["image"]["file_name"])
    bgr = cv2.imread(image_path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {image_path}")
    anns = sorted(record["annotations"], key=lambda r: -r["area"])
    masks = [rle_to_mask(r["segmentation"]) for r in anns]
    labels = [f"{r['predicted_iou']:.2f}" for r in anns]
    out = draw_masks(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), masks, labels, keys=list(range(len(masks))))
    cv2.imwrite(out_png, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
    return out_png



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("annotation", help="a <name>.json written by the data engine")
    ap.add_argument("-o", "--output", help="PNG to write (default: <name>_view.png beside the JSON)")
    a = ap.parse_args(argv)
    out = a.output or os.path.splitext(a.annotation)[0] + "_view.png"
    print(render(a.annotation, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
