"""SAM 2's image encoder: the Hiera trunk and its FPN neck.

The neck projects each trunk level to d_model channels (1x1 convolutions) and adds the top-down
path (nearest-neighbour 2x upsampling) on the levels in fpn_top_down_levels; with scalp=1 the
lowest-resolution level is dropped. Outputs, highest resolution first: features B x d x S/4,
S/8, S/16 (the last is the image embedding) and their sine position encodings.
"""
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hiera import Hiera
from .position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    def __init__(self, d_model: int, backbone_channel_list: Sequence[int],
                 fpn_top_down_levels: Sequence[int] = (2, 3), fpn_interp_model: str = "nearest") -> None:
        """
        Args:
            d_model: output channels of every level.
            backbone_channel_list: trunk channels, lowest resolution first.
            fpn_top_down_levels: levels (0 = highest resolution) that get the top-down path.
        """
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.position_encoding = PositionEmbeddingSine(d_model)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            level = nn.Sequential()
            level.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(level)
        self.fpn_top_down_levels = list(fpn_top_down_levels)
        self.fpn_interp_model = fpn_interp_model

    def forward(self, xs: List[torch.Tensor]):
        """xs: trunk levels, highest resolution first -> (features, position encodings), same order."""
        n = len(self.convs) - 1
        out: List[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        pos: List[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                align = None if self.fpn_interp_model == "nearest" else False
                top_down = F.interpolate(prev.float(), scale_factor=2.0, mode=self.fpn_interp_model,
                                         align_corners=align)
                prev = lateral + top_down
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck: B x 3 x S x S normalised image -> dict with ``vision_features`` (B x d x S/16
    x S/16), ``vision_pos_enc`` and ``backbone_fpn`` (lists, highest resolution first)."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        if trunk.channel_list != neck.backbone_channel_list:
            raise ValueError(f"trunk channels {trunk.channel_list} do not match the neck's "
                             f"{neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, x: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        features, pos = self.neck(self.trunk(x))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
