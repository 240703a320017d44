"""Training and evaluation with the Segment Anything recipe (ROS-free).

losses.py      focal + dice (20:1) per mask, min over the multimask outputs, IoU-head MSE
simulation.py  interactive prompt simulation: first click or box, then clicks from the error region
datasets.py    procedural scenes on the fly, COCO / SA-1B JSON datasets with RLE masks
trainer.py     the training loop (resumable, validation mIoU, progress bar)
evaluation.py  1-click / oracle / box / k-click mIoU and IoU-head calibration on a held-out set
"""
