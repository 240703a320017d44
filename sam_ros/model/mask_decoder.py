"""SAM's mask decoder: two-way transformer, upscaling, per-token hypernetwork MLPs, IoU head."""
from typing import Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


class MaskDecoder(nn.Module):
    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        """
        Args:
            transformer_dim: channels of the transformer (= prompt embedding dim).
            transformer: the two-way transformer.
            num_multimask_outputs: ambiguity-aware masks (3 in SAM: whole, part, subpart);
                one more token gives the single-mask output.
            iou_head_depth / iou_head_hidden_dim: the IoU prediction MLP.
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embeddings: 1 x C x h x w (shared by all prompts) or B x C x h x w.
            image_pe: 1 x C x h x w.
            sparse_prompt_embeddings: B x N x C.
            dense_prompt_embeddings: B x C x h x w, or 1 x C x h x w when shared.
            multimask_output: True -> the 3 ambiguity masks, False -> the single-mask token.
        Returns:
            low-res mask logits B x M x 4h x 4w and IoU predictions B x M (M = 3 or 1).
        """
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, outputs=sl
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        outputs: slice = slice(None),
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits B x M x 4h x 4w and IoU predictions B x M of the mask tokens selected by `outputs`
        (default all 4: single-mask token first, then the 3 ambiguity tokens)."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)

        src = image_embeddings + dense_prompt_embeddings  # broadcasts; no per-prompt copy
        h, w = src.shape[-2:]
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        selected = range(self.num_mask_tokens)[outputs]
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in selected], dim=1)
        masks = self._upscale_masks(src, hyper_in, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out)[:, outputs]
        return masks, iou_pred

    def _upscale_masks(self, src: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """output_upscaling followed by the hypernetwork product, computed on image tokens in
        channels-last layout: a 2x2 stride-2 transposed convolution is a per-pixel linear map to
        2x2 sub-pixels, so both are plain matrix products with no layout copies; the pixels are put
        in image order only at the end, on the few mask channels.

        src: B x (h*w) x C tokens, hyper_in: B x M x C/8 -> B x M x 4h x 4w logits.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        b = src.shape[0]
        c1, c2 = up1.out_channels, up2.out_channels
        # ConvTranspose2d weight (in, out, kh, kw) -> rows (kh, kw, out): sub-pixel (di, dj) major
        y = F.linear(src, up1.weight.permute(2, 3, 1, 0).flatten(0, 2), up1.bias.repeat(4))
        y = act1(F.layer_norm(y.view(b, h * w * 4, c1), (c1,), norm.weight, norm.bias, norm.eps))
        y = F.linear(y, up2.weight.permute(2, 3, 1, 0).flatten(0, 2), up2.bias.repeat(4))
        y = act2(y.view(b, h * w * 16, c2))
        masks = hyper_in @ y.transpose(1, 2)  # B x M x (h*w*16), pixel (i, j, di, dj, ei, ej)
        m = masks.shape[1]
        # row 4i + 2di + ei, column 4j + 2dj + ej
        masks = masks.view(b, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return masks.reshape(b, m, 4 * h, 4 * w)


class MLP(nn.Module):
    """num_layers linear layers with an activation (ReLU unless given) between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 sigmoid_output: bool = False, activation: Type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims[:-1], dims[1:]))
        self.sigmoid_output = sigmoid_output
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
