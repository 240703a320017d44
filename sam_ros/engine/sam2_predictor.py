"""The image predictor for SAM 2 models: the same API as for SAM (``encode`` / ``decode`` /
``predict_prompts``, ``set_image`` / ``predict``), with SAM 2's geometry and decoding.

Differences from SAM, as in Meta's ``SAM2ImagePredictor``:
- the image is resized to the square input (no aspect-preserving padding) with antialiased
  bilinear interpolation on 0-1 RGB; prompt coordinates scale by S/W and S/H;
- the embedding is the encoder's stride-16 output plus the no-memory embedding; the stride-4
  and stride-8 features go to the decoder's skip connections;
- a box is fed as two points (labels 2, 3) ahead of the clicks;
- single-mask output falls back to the best multimask output when unstable;
- masks are bilinear-resized from the low-res logits straight to the image size (computed as
  region crops like SAM's, ``mask_upscale_size`` None); the returned low-res logits are clamped
  to +-32;
- every prediction (the same :class:`MaskPrediction` as SAM's) carries the object-score logit
  in ``object_score_logits`` (> 0: the object is in the image).
"""
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from ..model.sam2.sam2_base import SAM2
from . import transforms
from .predictor import DTypeLike, ImageEmbedding, SamPredictor
from .prompts import InputError, validate_image

LOW_RES_CLAMP = 32.0


class Sam2TorchMaskPrediction(NamedTuple):
    """``decode_torch``'s result: SAM's TorchMaskPrediction plus the object-score logits (B x 1)."""
    masks: torch.Tensor
    iou_predictions: torch.Tensor
    low_res_logits: torch.Tensor
    stability_scores: torch.Tensor
    object_score_logits: torch.Tensor


class Sam2Predictor(SamPredictor):
    """Runs a :class:`SAM2` model on images and prompts (see the module docstring)."""

    torch_prediction_type = Sam2TorchMaskPrediction

    def __init__(self, model: SAM2, device: Union[str, torch.device] = "cpu", encoder_dtype: DTypeLike = None,
                 decoder_dtype: DTypeLike = None, stability_offset: float = 1.0) -> None:
        super().__init__(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype,
                         stability_offset=stability_offset)
        self.model.memory_attention.to(self.decoder_dtype)
        self.model.memory_encoder.to(self.decoder_dtype)
        # The decoder's high-resolution skip projections run in forward_image, on the encoder's
        # output: they take the encoder's precision (their outputs are cast to the decoder's).
        self.model.sam_mask_decoder.conv_s0.to(self.encoder_dtype)
        self.model.sam_mask_decoder.conv_s1.to(self.encoder_dtype)

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding:
        """H x W x 3 uint8 image -> embedding (the image is resized to the square model input)."""
        validate_image(image)
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format == "BGR":
            image = image[..., ::-1]
        return self.encode_torch(transforms.image_to_tensor(image, self.device), image.shape[:2])

    @torch.inference_mode()
    def encode_torch(self, image: torch.Tensor, original_size: Tuple[int, int]) -> ImageEmbedding:
        """1 x 3 x h x w RGB (0-255, any size) -> embedding."""
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise InputError(f"expected a 1 x 3 x h x w image tensor, got {tuple(image.shape)}")
        with self._encoder_stream_ctx():
            x = self.model.preprocess(image.to(self.device)).to(self.encoder_dtype)
            out = self.model.forward_image(x)
            raw = out["vision_features"].to(self.decoder_dtype)
            features = raw + self.model.no_mem_embed.view(1, -1, 1, 1).to(raw.dtype)
            s0, s1 = (f.to(self.decoder_dtype) for f in out["backbone_fpn"][:2])
            ready = None
            if self.device.type == "cuda":
                ready = torch.cuda.Event()
                ready.record()
        size = (self.img_size, self.img_size)
        return ImageEmbedding(features, (int(original_size[0]), int(original_size[1])), size, ready,
                              high_res_features=(s0, s1), backbone_features=raw)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def mask_upscale_size(self) -> Optional[int]:
        return None  # one bilinear resize L x L -> image size (transforms)

    def transform_coords(self, coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        h, w = original_size
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] *= self.img_size / w
        out[..., 1] *= self.img_size / h
        return out

    def transform_boxes(self, boxes: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        return self.transform_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def _returned_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        return low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    # ---- decoding -------------------------------------------------------------------------
    def _decode_low_res(self, embedding: ImageEmbedding, point_coords, point_labels, boxes, mask_input,
                        tokens: slice = slice(None)):
        """Low-res logits B x M x L x L, IoU B x M and object-score logits B x 1. tokens: slice(1, None)
        for the 3 multimask outputs, slice(0, 1) for single-mask output (with the stability fall
        back), slice(None) for all 4 tokens."""
        if embedding.high_res_features is None:
            raise InputError("this embedding was not computed by a SAM 2 model")
        coords, labels = None, None
        if point_coords is not None:
            coords, labels = point_coords.to(self.device).float(), point_labels.to(self.device)
        if boxes is not None:
            corners = boxes.to(self.device).float().reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], device=self.device).expand(corners.shape[0], 2)
            if coords is None:
                coords, labels = corners, corner_labels
            else:
                coords = torch.cat([corners, coords], dim=1)
                labels = torch.cat([corner_labels.to(labels.dtype), labels], dim=1)
        if mask_input is not None:
            mask_input = mask_input.to(self.device, self.decoder_dtype)
        decoder = self.model.sam_mask_decoder
        sparse, dense = self.model.sam_prompt_encoder(points=None if coords is None else (coords, labels),
                                                      boxes=None, masks=mask_input)
        masks, iou, _, obj = decoder.predict_all(embedding.features, self._dense_pe, sparse, dense,
                                                 list(embedding.high_res_features))
        if tokens == slice(0, 1) and decoder.dynamic_multimask_via_stability:
            masks, iou = decoder._dynamic_multimask_via_stability(masks, iou)
        else:
            masks, iou = masks[:, tokens], iou[:, tokens]
        return masks, iou, obj
