"""A tracked target: its state machine and what is known about it on the latest frame."""
import enum
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from ..prompts import Prompt
from .appearance import Appearance
from .flow import AnchoredPoints, FlowFrame


class TargetState(str, enum.Enum):
    """tracking: present, mask published; reacquired: found again on this frame after being
    absent (then tracking); occluded: not visible, expected back near where it was heading;
    lost: absent longer than `occluded_s`, searched for in the whole image; ended: absent longer
    than `lost_s` (or removed): reported once, then forgotten."""
    TRACKING = "tracking"
    REACQUIRED = "reacquired"
    OCCLUDED = "occluded"
    LOST = "lost"
    ENDED = "ended"

    @property
    def present(self) -> bool:
        return self in (TargetState.TRACKING, TargetState.REACQUIRED)


@dataclass
class Target:
    """An object that keeps being segmented on new frames, with the same id throughout."""
    target_id: str
    prompt: Prompt                      # as given, in pixels of the frame it was given on
    source: str = "prompt"
    state: TargetState = TargetState.TRACKING
    mask: Optional[np.ndarray] = None   # H x W bool, estimate on frame `key`
    bbox: Tuple[int, int, int, int] = (0, 0, 0, 0)   # (x, y, w, h) of mask
    box: Optional[np.ndarray] = None    # (x0, y0, x1, y1): where the whole object is expected (also
                                        # when partly hidden); the re-segmentation prompt
    key: int = 0                        # frame of the estimate
    stamp: float = 0.0                  # its time, seconds
    decoded_key: int = 0                # frame the mask was last decoded on
    decoded_stamp: float = 0.0
    age_frames: int = 0                 # frames propagated since the last decode
    low_res: Optional[np.ndarray] = None   # 1 x L x L logits of the last decode
    iou: float = 0.0                    # predicted IoU of the last decode
    stability: float = 0.0
    propagated: bool = False            # the current mask came from optical flow
    track: Optional[AnchoredPoints] = None   # flow points, from the anchor frame to frame `key`
    anchor_mask: Optional[np.ndarray] = None   # the mask the propagation starts from (last decode)
    anchor_bbox: Tuple[int, int, int, int] = (0, 0, 0, 0)
    anchor_box: Optional[np.ndarray] = None
    matrix: np.ndarray = field(default_factory=lambda: np.eye(2, 3))   # anchor frame -> frame `key`
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))               # px / frame of the centre
    center: np.ndarray = field(default_factory=lambda: np.zeros(2))                 # last known / predicted
    size: np.ndarray = field(default_factory=lambda: np.zeros(2))                   # w, h of the last good box
    absent_since: Optional[float] = None   # stamp of the first frame it was missing on
    absent_view: Optional[np.ndarray] = None   # thumbnail of the frame it went absent on (what was in view then)
    absent_box: Tuple[int, int, int, int] = (0, 0, 0, 0)   # its box then (x, y, w, h)
    left_view: bool = False             # absent because its motion carried it out of the image
    appearance: Appearance = field(default_factory=Appearance)
    distractors: Optional[np.ndarray] = None   # embedding grid: stamp until which a cell is not
                                               # tried as a search candidate (something else is there)
    distractor_colour: Optional[np.ndarray] = None   # ... and the cell's colour similarity then
    search_colour: Optional[np.ndarray] = None   # embedding grid: colour similarity of the cells of
                                                 # the last frame searched
    frames: int = 0                     # frames with a result
    decodes: int = 0                    # frames decoded on an embedding
    reacquisitions: int = 0
    image_size: Tuple[int, int] = (0, 0)
    prompt_size: Optional[Tuple[int, int]] = None   # (H, W) of the frame the prompt was given on
    flow: Optional[FlowFrame] = None    # the frame `points` are on

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask)) if self.mask is not None else 0

    def box_xyxy(self) -> np.ndarray:
        x, y, w, h = self.bbox
        return np.array([x, y, x + w, y + h], np.float64)
