"""Embed once, decode many: the predictor every front end (node, CLI, training, AMG) calls.

``encode`` turns an image into an :class:`ImageEmbedding` (an explicit state object, so callers
may keep several, e.g. a cache of recent camera frames); ``decode`` runs the prompt encoder and
mask decoder on one embedding for a batch of prompts. The numpy API (``encode``/``decode``/
``predict_prompts``, and the reference-style ``set_image``/``predict``) sits over the torch API
(``encode_torch``/``decode_torch``).
"""
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..model.sam import Sam
from . import transforms
from .mask_crops import MaskCrop, MaskCrops, crops_from_low_res
from .mask_utils import stability_score
from .prompts import InputError, Prompt, validate_boxes, validate_image, validate_mask_input, validate_points

DTypeLike = Union[str, torch.dtype, None]

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: DTypeLike) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16") from None


@dataclass
class ImageEmbedding:
    """The encoder's output for one image, with the geometry needed to map prompts and masks."""
    features: torch.Tensor           # 1 x C x h x w, in the decoder's dtype and device
    original_size: Tuple[int, int]   # (H, W) of the image given to encode
    input_size: Tuple[int, int]      # (h, w) after resizing, before padding
    ready: Optional[Any] = None      # CUDA event recorded when the features are computed
    # SAM 2 only: the decoder's stride-4 / stride-8 skip features (1 x C/8 x 4h x 4w, 1 x C/4 x 2h x 2w)
    # and the encoder output before the no-memory embedding (what the video tracker conditions).
    high_res_features: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    backbone_features: Optional[torch.Tensor] = None


class MaskPrediction:
    """What ``decode`` returns for B prompts with M masks each (unbatched: without the B axis).

    iou_predictions B x M, low_res_logits B x M x L x L (feed back as mask_input),
    stability_scores B x M; the masks either as crops (``crops``, ``crop(b, m)``: tight bbox
    (x, y, w, h) in image pixels, bool pixels, area; no full-frame array is made) or as
    ``masks``, B x M x H x W bool (float logits with return_logits), made from the crops on
    first use. Unpacks like the tuple (masks, iou_predictions, low_res_logits, stability_scores).
    object_score_logits B x 1: SAM 2's object score (> 0: the object is in the image), None for
    SAM 1 models.
    """
    __slots__ = ("_masks", "crops", "iou_predictions", "low_res_logits", "stability_scores", "object_score_logits")

    def __init__(self, masks: Optional[np.ndarray], iou_predictions: np.ndarray, low_res_logits: np.ndarray,
                 stability_scores: np.ndarray, crops: Optional[MaskCrops] = None,
                 object_score_logits: Optional[np.ndarray] = None) -> None:
        if masks is None and crops is None:
            raise ValueError("give masks or crops")
        self._masks = masks
        self.crops = crops
        self.iou_predictions = iou_predictions
        self.low_res_logits = low_res_logits
        self.stability_scores = stability_scores
        self.object_score_logits = object_score_logits

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            self._masks = self.crops.to_masks()
        return self._masks

    def crop(self, *index: int) -> MaskCrop:
        """Mask `index` (b, m batched; m unbatched) as its tight crop, from the crops when the
        prediction has them (no full-frame work), else cut from the bool masks."""
        if self.crops is None:
            if self._masks.dtype != bool:
                raise ValueError("these masks are logits (return_logits=True): threshold them first")
            self.crops = MaskCrops.from_masks(self._masks)
        return self.crops.crop(*index)

    def mask(self, *index: int) -> np.ndarray:
        """Mask `index` as a full H x W array (only that one is made from its crop)."""
        if self._masks is None:
            return self.crops.mask(*index)
        return self._masks[index]

    def select(self, index) -> "MaskPrediction":
        """The prediction of the prompts at `index` of the leading axis (an int drops the axis)."""
        return MaskPrediction(None if self._masks is None else self._masks[index], self.iou_predictions[index],
                              self.low_res_logits[index], self.stability_scores[index],
                              None if self.crops is None else self.crops[index],
                              None if self.object_score_logits is None else self.object_score_logits[index])

    def __iter__(self):
        return iter((self.masks, self.iou_predictions, self.low_res_logits, self.stability_scores))


class TorchMaskPrediction(NamedTuple):
    masks: torch.Tensor
    iou_predictions: torch.Tensor
    low_res_logits: torch.Tensor
    stability_scores: torch.Tensor


class SamPredictor:
    """Runs a :class:`Sam` model on images and prompts.

    The predictor takes the model over: it moves it to `device` and casts its parts to the
    requested dtypes (build or load one model per predictor when mixing precisions).

    Args:
        model: the SAM model (any encoder family).
        device: torch device for the model.
        encoder_dtype / decoder_dtype: precision of each part (fp32, fp16, bf16); the decoder
            defaults to the encoder's.
        image_encoder: optional replacement for ``model.image_encoder`` (a compiled or exported
            backend); called with a 1 x 3 x S x S normalised, padded tensor.
        stability_offset: logit offset of the stability score.
        resize: how images are resized to the model's input, one of ``transforms.RESIZE_METHODS``;
            "auto" (default): "reference" (segment-anything's PIL bilinear, pixel for pixel) for
            a model of an official architecture (ViT-B/L/H, MobileSAM), "opencv" otherwise.
    """

    torch_prediction_type = TorchMaskPrediction

    def __init__(
        self,
        model: Sam,
        device: Union[str, torch.device] = "cpu",
        encoder_dtype: DTypeLike = None,
        decoder_dtype: DTypeLike = None,
        image_encoder: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        stability_offset: float = 1.0,
        resize: str = "auto",
    ) -> None:
        if resize not in ("auto",) + transforms.RESIZE_METHODS:
            raise ValueError(f"resize must be auto or one of {', '.join(transforms.RESIZE_METHODS)}, not {resize!r}")
        self.resize = transforms.default_resize_method(getattr(model, "config", None)) if resize == "auto" else resize
        self.device = torch.device(device)
        self.encoder_dtype = resolve_dtype(encoder_dtype)
        self.decoder_dtype = resolve_dtype(decoder_dtype) if decoder_dtype is not None else self.encoder_dtype
        self.model = model.to(self.device).eval()
        self.model.image_encoder.to(self.encoder_dtype)
        self.model.prompt_encoder.to(self.decoder_dtype)
        self.model.mask_decoder.to(self.decoder_dtype)
        # The Fourier features must stay float32 whatever the prompt encoder's precision.
        self.model.prompt_encoder.pe_layer.float()
        self._image_encoder = image_encoder or self.model.image_encoder
        with torch.inference_mode():
            self._dense_pe = self.model.prompt_encoder.get_dense_pe().to(self.decoder_dtype)
        self.stability_offset = stability_offset
        self._embedding: Optional[ImageEmbedding] = None
        self._encoder_stream = None

    # ---- geometry -------------------------------------------------------------------------
    @property
    def img_size(self) -> int:
        return self.model.img_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-res mask logits (4 x the embedding grid)."""
        return self.model.prompt_encoder.mask_input_size[0]

    @property
    def mask_upscale_size(self) -> Optional[int]:
        """The img_size of ``transforms.postprocess_masks``: SAM's padded square input (SAM 2: None)."""
        return self.img_size

    def transform_coords(self, coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """... x 2 (x, y) pixels of the original image -> the model's input frame."""
        return transforms.apply_coords(coords, original_size, self.img_size)

    def transform_boxes(self, boxes: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """B x 4 (x0, y0, x1, y1) boxes of the original image -> the model's input frame."""
        return transforms.apply_boxes(boxes, original_size, self.img_size)

    def postprocess_masks(self, low_res: torch.Tensor, embedding: ImageEmbedding,
                          original_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Low-res logits B x M x L x L -> logits at the original image size (or original_size)."""
        return transforms.postprocess_masks(low_res, embedding.input_size, original_size or embedding.original_size,
                                            self.mask_upscale_size)

    def mask_crops(self, low_res: torch.Tensor, embedding: ImageEmbedding,
                   original_size: Optional[Tuple[int, int]] = None,
                   stability_offset: Optional[float] = None) -> Tuple[MaskCrops, np.ndarray]:
        """Low-res logits ... x L x L -> the masks ``postprocess_masks(...) > mask_threshold`` as
        crops and their stability scores (``mask_crops.crops_from_low_res``)."""
        return crops_from_low_res(low_res, embedding.input_size, original_size or embedding.original_size,
                                  self.mask_upscale_size, self.model.mask_threshold,
                                  self.stability_offset if stability_offset is None else stability_offset)

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding:
        """H x W x 3 uint8 image -> embedding. The image is resized so its longest side is the
        model's input size."""
        validate_image(image)
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format == "BGR":
            image = image[..., ::-1]
        if self.device.type == "cuda":
            # The frame goes to the GPU once, as uint8 through pinned memory without blocking,
            # and is resized / normalised / padded there; the reference resize (PIL's filter)
            # runs on the CPU first, and the GPU resize is then a no-op.
            original_size = image.shape[:2]
            if self.resize == "reference":
                image = transforms.resize_longest_side(image, self.img_size, "reference")
            with self._encoder_stream_ctx():
                frame = torch.from_numpy(np.ascontiguousarray(image)).pin_memory().to(self.device, non_blocking=True)
                tensor = transforms.resize_longest_side_torch(frame, self.img_size)
            return self.encode_torch(tensor, original_size)
        resized = transforms.resize_longest_side(image, self.img_size, self.resize)
        tensor = transforms.image_to_tensor(resized, self.device)
        return self.encode_torch(tensor, image.shape[:2])

    def _encoder_stream_ctx(self):
        """On CUDA the encoder runs on its own stream, so encoding the next frame can overlap with
        decoding prompts on the current one (decode waits on the embedding's ready event)."""
        if self.device.type != "cuda":
            import contextlib

            return contextlib.nullcontext()
        if self._encoder_stream is None:
            self._encoder_stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._encoder_stream)

    @torch.inference_mode()
    def encode_torch(self, image: torch.Tensor, original_size: Tuple[int, int]) -> ImageEmbedding:
        """1 x 3 x h x w RGB (0-255, longest side = img_size) -> embedding."""
        if image.ndim != 4 or image.shape[:2] != (1, 3) or max(image.shape[2:]) != self.img_size:
            raise InputError(f"expected 1 x 3 x h x w with longest side {self.img_size}, got {tuple(image.shape)}")
        with self._encoder_stream_ctx():
            x = self.model.preprocess(image.to(self.device)).to(self.encoder_dtype)
            features = self._image_encoder(x).to(self.decoder_dtype)
            ready = None
            if self.device.type == "cuda":
                ready = torch.cuda.Event()
                ready.record()
        return ImageEmbedding(features, (int(original_size[0]), int(original_size[1])),
                              (int(image.shape[2]), int(image.shape[3])), ready)

    # ---- decoding (torch) -----------------------------------------------------------------
    @torch.inference_mode()
    def decode_torch(
        self,
        embedding: ImageEmbedding,
        point_coords: Optional[torch.Tensor] = None,
        point_labels: Optional[torch.Tensor] = None,
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        full_resolution: bool = True,
    ) -> TorchMaskPrediction:
        """Decode a batch of B prompts on one embedding.

        Coordinates are in the resized input frame (see ``transforms.apply_coords``).
        point_coords B x N x 2, point_labels B x N, boxes B x 4, mask_input B x 1 x L x L.
        With full_resolution=False only the low-res logits are produced (masks is empty and
        stability is computed on the low-res logits).
        """
        low_res, iou, extra = self._low_res_float(embedding, point_coords, point_labels, boxes, mask_input,
                                                  multimask_output)
        threshold = self.model.mask_threshold
        if not full_resolution:
            stab = stability_score(low_res, threshold, self.stability_offset)
            # The raw logits (not _returned_low_res): the caller upscales them itself.
            return self.torch_prediction_type(low_res.new_zeros((0,)), iou, low_res, stab, *extra)
        logits = self.postprocess_masks(low_res, embedding)
        stab = stability_score(logits, threshold, self.stability_offset)
        masks = logits if return_logits else logits > threshold
        return self.torch_prediction_type(masks, iou, self._returned_low_res(low_res), stab, *extra)

    def _returned_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        """The low-res logits handed back (to be fed back as mask_input; SAM 2 clamps them)."""
        return low_res

    def _low_res_float(self, embedding: ImageEmbedding, point_coords, point_labels, boxes, mask_input,
                       multimask_output: bool) -> Tuple[torch.Tensor, torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Low-res logits B x M x L x L and IoU predictions B x M in float32 (M = 3 or 1), and the
        model's further outputs (SAM 2: object-score logits B x 1; SAM: none)."""
        if point_coords is not None and point_labels is None:
            raise InputError("point_labels are required with point_coords")
        if embedding.ready is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(embedding.ready)
            embedding.features.record_stream(stream)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        out = self._decode_low_res(embedding, point_coords, point_labels, boxes, mask_input, sl)
        return out[0].float(), out[1].float(), tuple(t.float() for t in out[2:])

    def _decode_low_res(self, embedding: ImageEmbedding, point_coords, point_labels, boxes, mask_input,
                        tokens: slice = slice(None)):
        """Prompt encoder + mask decoder: low-res logits (B x M x L x L) and IoU predictions (B x M)
        of the mask tokens selected by `tokens` (default all 4). Backends override this (SAM 2
        returns its object-score logits B x 1 as a third output)."""
        points = None
        if point_coords is not None:
            points = (point_coords.to(self.device), point_labels.to(self.device))
        if boxes is not None:
            boxes = boxes.to(self.device)
        if mask_input is not None:
            mask_input = mask_input.to(self.device, self.decoder_dtype)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.model.mask_decoder.predict_masks(embedding.features, self._dense_pe, sparse, dense, tokens)

    # ---- decoding (numpy) -----------------------------------------------------------------
    def decode(
        self,
        embedding: ImageEmbedding,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> MaskPrediction:
        """Decode prompts given in original-image pixels.

        Unbatched: point_coords N x 2, point_labels N, box 4, mask_input 1 x L x L -> outputs
        without the batch axis (M x H x W masks). Batched (B objects in one call): point_coords
        B x N x 2, point_labels B x N, box B x 4, mask_input B x 1 x L x L -> B x M x ... .
        Masks are computed only inside their regions and returned as crops (``pred.crop``;
        ``pred.masks`` makes the full-frame arrays on first use); with return_logits the
        full-frame float logits are computed instead.
        """
        batched = False
        size = embedding.original_size
        coords_t = labels_t = boxes_t = mask_t = None
        b = None
        if point_coords is not None:
            coords = np.asarray(point_coords, dtype=np.float64)
            labels = np.asarray(point_labels if point_labels is not None else np.ones(coords.shape[:-1]))
            batched |= coords.ndim == 3
            if coords.ndim == 2:
                coords, labels = coords[None], labels.reshape(1, -1)
            validate_points(coords, labels, size)
            coords = self.transform_coords(coords, size)
            coords_t = torch.as_tensor(coords, dtype=torch.float32)
            labels_t = torch.as_tensor(labels, dtype=torch.int64)
            b = coords.shape[0]
        if box is not None:
            boxes = np.asarray(box, dtype=np.float64)
            if boxes.ndim not in (1, 2) or boxes.shape[-1] != 4:
                raise InputError(f"box must be (x0, y0, x1, y1) or B x 4, got shape {boxes.shape}")
            batched |= boxes.ndim == 2
            boxes = validate_boxes(boxes.reshape(-1, 4) if boxes.ndim == 1 else boxes, size)
            if b is not None and boxes.shape[0] != b:
                raise InputError(f"{boxes.shape[0]} boxes for {b} point sets")
            boxes_t = torch.as_tensor(self.transform_boxes(boxes, size), dtype=torch.float32)
            b = boxes.shape[0]
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            validate_mask_input(m, self.low_res_size)
            batched |= m.ndim == 4
            m = m[None] if m.ndim == 3 else m
            if b is not None and m.shape[0] != b:
                raise InputError(f"{m.shape[0]} mask inputs for {b} prompts")
            mask_t = torch.from_numpy(m)
        if coords_t is None and boxes_t is None and mask_t is None:
            raise InputError("give at least one prompt: points, a box or a mask input")
        if return_logits:
            out = [t.cpu().numpy() for t in
                   self.decode_torch(embedding, coords_t, labels_t, boxes_t, mask_t, multimask_output, True)]
            pred = MaskPrediction(*out[:4], object_score_logits=out[4] if len(out) > 4 else None)
        else:
            with torch.inference_mode():
                low, iou, extra = self._low_res_float(embedding, coords_t, labels_t, boxes_t, mask_t,
                                                      multimask_output)
                crops, stab = self.mask_crops(low, embedding)
                low = self._returned_low_res(low)
            pred = MaskPrediction(None, iou.cpu().numpy(), low.cpu().numpy(), stab, crops,
                                  extra[0].cpu().numpy() if extra else None)
        return pred if batched else pred.select(0)

    def predict_prompts(self, embedding: ImageEmbedding, prompts: Sequence[Prompt],
                        max_batch: int = 64) -> List[MaskPrediction]:
        """Decode many objects' prompts on one embedding: prompts of the same shape (number of
        points, box or not, mask or not, multimask or not) decode together in batches of at most
        `max_batch` (full-resolution logits of thousands of objects would not fit in memory).
        Returns one unbatched MaskPrediction per prompt, in order."""
        groups: "OrderedDict[tuple, List[int]]" = OrderedDict()
        for i, p in enumerate(prompts):
            groups.setdefault(p.signature, []).append(i)
        chunks = [(sig, idx[k : k + max_batch]) for sig, idx in groups.items() for k in range(0, len(idx), max_batch)]
        results: List[Optional[MaskPrediction]] = [None] * len(prompts)
        for (n_points, has_box, has_mask, multimask), idx in chunks:
            group = [prompts[i] for i in idx]
            pred = self.decode(
                embedding,
                point_coords=np.stack([p.points for p in group]) if n_points else None,
                point_labels=np.stack([p.labels for p in group]) if n_points else None,
                box=np.stack([p.box for p in group]) if has_box else None,
                mask_input=np.stack([np.asarray(p.mask_input).reshape(1, *np.shape(p.mask_input)[-2:])
                                     for p in group]) if has_mask else None,
                multimask_output=multimask,
            )
            for j, i in enumerate(idx):
                results[i] = pred.select(j)
        return results  # type: ignore[return-value]

    def warm_up(self, image_size: Tuple[int, int] = (480, 640)) -> float:
        """One encode and one decode on a blank frame, so the first real frame does not pay for
        the kernels' first-use set-up (measured in a fresh node process on the 2-core CPU: the
        first frame's encode took over a second, long enough for a click waiting on it to miss
        prompt_wait_s). Returns the seconds it took; nothing of it is kept."""
        t0 = time.perf_counter()
        h, w = image_size
        embedding = self.encode(np.zeros((h, w, 3), np.uint8))
        self.decode(embedding, point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]))
        return time.perf_counter() - t0

    # ---- reference-style stateful API -----------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        self._embedding = self.encode(image, image_format)

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Tuple[int, int]) -> None:
        self._embedding = self.encode_torch(transformed_image, original_image_size)

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    def get_image_embedding(self) -> torch.Tensor:
        return self._require_embedding().features

    def reset_image(self) -> None:
        self._embedding = None

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False) -> MaskPrediction:
        return self.decode(self._require_embedding(), point_coords, point_labels, box, mask_input,
                           multimask_output, return_logits)

    def predict_torch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False) -> TorchMaskPrediction:
        return self.decode_torch(self._require_embedding(), point_coords, point_labels, boxes, mask_input,
                                 multimask_output, return_logits)

    def _require_embedding(self) -> ImageEmbedding:
        if self._embedding is None:
            raise RuntimeError("no image set: call set_image() first")
        return self._embedding
