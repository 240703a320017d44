"""Inference-time fusion of TinyViT's small operators for CPUs (MobileSAM's encoder and the
embedded default model).

TinyViT is made of many small layers: every convolution is followed by a BatchNorm and most by a
GELU, and at 1/4 resolution each of those is a full pass over a megabyte-sized activation. On a
CPU the encoder spends more time in these memory-bound passes than in its arithmetic. Fusing, in
place (the modules' forward code is unchanged; fused modules replace children):

- Conv2d + BatchNorm2d -> one convolution with the BatchNorm folded into its weight and bias;
- that convolution + the GELU after it -> one oneDNN convolution with a GELU post-op
  (``torch.ops.mkldnn._convolution_pointwise``, the kernel torch.compile's CPU backend uses);
- the MLPs' Linear + GELU -> one oneDNN matrix product with a GELU post-op;
- the neck's 3 x 3 convolution gets its weight pre-packed in oneDNN's layout;
- MBConv blocks with a large expanded activation (MobileSAM's first stage) run on row strips
  that keep their intermediates in cache (FusedMBConv).

The result computes the same function (float32: within ~1e-6 relative; the GELU is the exact
erf form) and keeps one module with parameters per fused layer, so forward pre-hooks (the
streaming session's layer preemption) still see every layer. It is for inference only: the
BatchNorms are gone (training needs the unfused model), and the state dict differs from the
checkpoint's (hash or save the model before fusing).

Where oneDNN's fused kernels are missing (a torch build without mkldnn, a CUDA tensor, fp16) the
fused modules run as plain F.conv2d / F.linear + F.gelu, so the folded BatchNorm still pays.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .tiny_vit import Conv2d_BN, ConvLayer, MBConv, Mlp, PatchEmbed, PatchMerging, TinyViT, TinyViTBlock

_ACTS = ("none", "gelu")


def _onednn_ok(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


class FusedConv2d(nn.Module):
    """Conv2d with a folded BatchNorm and an optional GELU: B x C x H x W -> B x C' x H' x W'."""

    def __init__(self, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], act: str = "none") -> None:
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"act must be one of {_ACTS}, got {act!r}")
        w = conv.weight.detach().float()
        b = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[0], device=w.device)
        if bn is not None:
            scale = bn.weight.detach().float() * torch.rsqrt(bn.running_var.float() + bn.eps)
            w = w * scale.view(-1, 1, 1, 1)
            b = (b - bn.running_mean.float()) * scale + bn.bias.detach().float()
        dtype = conv.weight.dtype
        self.weight = nn.Parameter(w.to(dtype), requires_grad=False)
        self.bias = nn.Parameter(b.to(dtype), requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.act = act
        # Dense convolutions with a spatial kernel (the neck's 3 x 3) run ~2x faster with their
        # weight reordered once into oneDNN's blocked layout for the input shape met; the
        # packed copy is rebuilt when the shape, dtype or weight changes.
        self._prepack = self.groups == 1 and self.weight.shape[-1] * self.weight.shape[-2] > 1
        self._packed = None

    def _weight_for(self, x: torch.Tensor) -> torch.Tensor:
        if not self._prepack:
            return self.weight
        w = self.weight
        key = (tuple(x.shape), x.dtype, w.data_ptr(), 0 if w.is_inference() else w._version)
        if self._packed is None or self._packed[0] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                w, list(self.padding), list(self.stride), list(self.dilation), self.groups, list(x.shape))
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor, padding: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """padding overrides the convolution's (FusedMBConv's row strips pad only sideways)."""
        pad = list(padding if padding is not None else self.padding)
        if _onednn_ok(x) and not torch.is_grad_enabled():
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._weight_for(x), self.bias, pad, list(self.stride), list(self.dilation),
                self.groups, self.act, [], "none" if self.act == "gelu" else "")
        y = F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups)
        return F.gelu(y) if self.act == "gelu" else y


class FusedMBConv(nn.Module):
    """MBConv (1x1 expand + GELU, depthwise 3x3 + GELU, 1x1 project, residual, GELU) of fused
    convolutions, run on row strips of the image when its expanded activation is large.

    At MobileSAM's first stage the expanded activation is 256 x 256 x 256 (67 MB in fp32),
    written and read by every pass; on strips of `rows` rows (+1 halo row each side for the 3x3)
    the three convolutions' intermediates stay in cache. Same arithmetic as the whole-image
    path: the depthwise convolution sees the same neighbours (real halo rows inside the image,
    zero rows at its border, as its padding would be).
    """

    def __init__(self, block: MBConv, strip_bytes: int = 4 << 20) -> None:
        super().__init__()
        self.conv1 = _conv(block.conv1, "gelu")
        self.conv2 = _conv(block.conv2, "gelu")
        self.conv3 = _conv(block.conv3)
        self.strip_bytes = strip_bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        hidden = self.conv1.weight.shape[0]
        rows = max(4, self.strip_bytes // max(1, b * w * hidden * x.element_size()))
        if 2 * rows > h or torch.is_grad_enabled():  # small enough to stay in cache whole
            return F.gelu(self.conv3(self.conv2(self.conv1(x))) + x)
        out = torch.empty_like(x)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            a, z = max(0, r0 - 1), min(h, r1 + 1)
            y = self.conv1(x[:, :, a:z])
            if a == r0 or z == r1:  # the image border: zero rows, as the 3x3's padding would add
                y = F.pad(y, (0, 0, int(a == r0), int(z == r1)))
            y = self.conv3(self.conv2(y, (0, 1)))
            out[:, :, r0:r1] = F.gelu(y + x[:, :, r0:r1])
        return out


class FusedLinearGELU(nn.Module):
    """GELU(Linear(x)) on ... x C_in -> ... x C_out."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False) if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _onednn_ok(x) and not torch.is_grad_enabled() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], "none")
        return F.gelu(F.linear(x, self.weight, self.bias))


def _conv(m: Conv2d_BN, act: str = "none") -> FusedConv2d:
    return FusedConv2d(m.c, m.bn, act)


def fuse_tiny_vit(encoder: TinyViT) -> TinyViT:
    """Fuse `encoder` in place for inference (see the module docstring); returns it."""
    if not isinstance(encoder, TinyViT):
        raise TypeError(f"fuse_tiny_vit expects a TinyViT, got {type(encoder).__name__}")
    encoder.eval()
    with torch.no_grad():
        for m in list(encoder.modules()):
            if isinstance(m, PatchEmbed):
                first, _gelu, second = m.seq
                m.seq = nn.Sequential(_conv(first, "gelu"), _conv(second))
            elif isinstance(m, ConvLayer):
                m.blocks = nn.ModuleList(FusedMBConv(blk) for blk in m.blocks)
            elif isinstance(m, PatchMerging):
                m.conv1, m.conv2, m.act = _conv(m.conv1, "gelu"), _conv(m.conv2, "gelu"), nn.Identity()
                m.conv3 = _conv(m.conv3)
            elif isinstance(m, TinyViTBlock):
                m.local_conv = _conv(m.local_conv)
            elif isinstance(m, Mlp):
                m.fc1, m.act = FusedLinearGELU(m.fc1), nn.Identity()
        neck = encoder.neck
        neck[0], neck[2] = FusedConv2d(neck[0], None), FusedConv2d(neck[2], None)
    encoder.fused = True
    return encoder
