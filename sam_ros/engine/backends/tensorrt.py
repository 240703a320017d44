"""The `tensorrt` backend: torch-tensorrt engines for NVIDIA GPUs (Jetson with JetPack, desktop).

- image encoder: static 1 x 3 x S x S input;
- prompt encoder + mask decoder: dynamic number of objects (1..max_objects) and points (1..16);
- precision per part (fp32 / fp16 / bf16; the encoder's inputs and outputs stay in that dtype);
- engines are saved under <cache_dir>/tensorrt/<key>/ where the key hashes the weights, input
  shapes, precisions, GPU name and the TensorRT / torch-tensorrt versions: a changed model,
  setting, GPU or library builds a new engine, an unchanged one loads in seconds.

Install (torch-tensorrt must match the installed torch and CUDA):
- desktop: `pip install torch-tensorrt` (with the matching torch, from the PyTorch index for your CUDA);
- Jetson: NVIDIA's JetPack wheels of torch and torch-tensorrt for your JetPack version.
"""
import hashlib
import json
import os
from typing import Tuple

import torch

from ..predictor import SamPredictor, resolve_dtype
from . import BackendUnavailable, weights_hash
from .onnx import SamOnnxDecoder

MAX_POINTS = 16


def _import_tensorrt():
    if not torch.cuda.is_available():
        raise BackendUnavailable("the tensorrt backend needs an NVIDIA GPU with CUDA; "
                                 f"torch {torch.__version__} sees none (use backend torch/compile/onnxruntime on CPU)")
    try:
        import tensorrt  # noqa: F401
        import torch_tensorrt
    except ImportError as e:
        raise BackendUnavailable(
            f"the tensorrt backend needs torch-tensorrt matching torch {torch.__version__} ({e}); "
            "desktop: pip install torch-tensorrt; Jetson: the JetPack torch-tensorrt wheel") from e
    return torch_tensorrt


def engine_key(model, img_size: int, enc_dtype: torch.dtype, dec_dtype: torch.dtype, max_objects: int) -> str:
    import tensorrt
    import torch_tensorrt

    info = {"weights": weights_hash(model), "img_size": img_size, "encoder": str(enc_dtype), "decoder": str(dec_dtype),
            "max_objects": max_objects, "max_points": MAX_POINTS, "gpu": torch.cuda.get_device_name(),
            "capability": torch.cuda.get_device_capability(), "tensorrt": tensorrt.__version__,
            "torch_tensorrt": torch_tensorrt.__version__, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:20]


class TensorRTPredictor(SamPredictor):
    def __init__(self, model, device: str = "cuda", encoder_dtype="fp16", decoder_dtype=None, cache_dir: str = "",
                 max_objects: int = 64) -> None:
        trt = _import_tensorrt()
        if not str(device).startswith("cuda"):
            raise BackendUnavailable(f"the tensorrt backend runs on CUDA devices, not {device!r}")
        super().__init__(model, device=device, encoder_dtype=encoder_dtype, decoder_dtype=decoder_dtype)
        enc_dtype, dec_dtype = resolve_dtype(encoder_dtype), resolve_dtype(decoder_dtype or encoder_dtype)
        key = engine_key(self.model, self.img_size, enc_dtype, dec_dtype, max_objects)
        folder = os.path.join(cache_dir, "tensorrt", key)
        os.makedirs(folder, exist_ok=True)
        self.engine_folder = folder
        s = self.img_size
        enc_path = os.path.join(folder, "encoder.ep")
        if os.path.exists(enc_path):
            self._image_encoder = trt.load(enc_path).module()
        else:
            inputs = [trt.Input((1, 3, s, s), dtype=enc_dtype)]
            compiled = trt.compile(self.model.image_encoder, ir="dynamo", inputs=inputs,
                                   enabled_precisions={enc_dtype}, use_explicit_typing=False)
            trt.save(compiled, enc_path, inputs=[torch.zeros(1, 3, s, s, dtype=enc_dtype, device=self.device)])
            self._image_encoder = compiled
        self._decoders = {}
        for with_mask in (False, True):
            path = os.path.join(folder, f"decoder{'_mask' if with_mask else ''}.ep")
            if os.path.exists(path):
                self._decoders[with_mask] = trt.load(path).module()
                continue
            wrapper = SamOnnxDecoder(self.model, with_mask).eval()
            grid = self.model.prompt_encoder.image_embedding_size
            c = self.model.prompt_encoder.embed_dim
            low = self.model.prompt_encoder.mask_input_size
            inputs = [trt.Input((1, c, *grid), dtype=dec_dtype),
                      trt.Input(min_shape=(1, 1, 2), opt_shape=(8, 2, 2), max_shape=(max_objects, MAX_POINTS, 2),
                                dtype=torch.float32),
                      trt.Input(min_shape=(1, 1), opt_shape=(8, 2), max_shape=(max_objects, MAX_POINTS), dtype=torch.int64)]
            if with_mask:
                inputs.append(trt.Input(min_shape=(1, 1, *low), opt_shape=(8, 1, *low), max_shape=(max_objects, 1, *low),
                                        dtype=dec_dtype))
            compiled = trt.compile(wrapper, ir="dynamo", inputs=inputs, enabled_precisions={dec_dtype},
                                   use_explicit_typing=False)
            trt.save(compiled, path, inputs=[i.example_tensor("opt_shape") if i.shape_mode.name == "DYNAMIC"
                                             else i.example_tensor() for i in inputs])
            self._decoders[with_mask] = compiled
        self.max_objects = max_objects

    def _decode_low_res(self, embedding, point_coords, point_labels, boxes, mask_input, tokens=slice(None)):
        b = next(t.shape[0] for t in (point_coords, boxes, mask_input) if t is not None)
        coords, labels = _prompt_tokens(b, point_coords, point_labels, boxes, self.device)
        if point_coords is None and boxes is None or b > self.max_objects or coords.shape[1] > MAX_POINTS:
            # Outside the engine's profile (mask-only prompts, very large batches): eager.
            return super()._decode_low_res(embedding, point_coords, point_labels, boxes, mask_input, tokens)
        args = [embedding.features, coords, labels]
        if mask_input is not None:
            args.append(mask_input.to(self.device, self.decoder_dtype))
        low, iou = self._decoders[mask_input is not None](*args)
        return low[:, tokens], iou[:, tokens]


def _prompt_tokens(b, point_coords, point_labels, boxes, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Points (+ the padding point when there is no box) and box corners as labels 2/3, exactly the
    token list the prompt encoder builds."""
    coords, labels = [], []
    if point_coords is not None:
        coords.append(point_coords.float().to(device))
        labels.append(point_labels.long().to(device))
        if boxes is None:
            coords.append(torch.zeros(b, 1, 2, device=device))
            labels.append(torch.full((b, 1), -1, dtype=torch.long, device=device))
    if boxes is not None:
        coords.append(boxes.float().to(device).reshape(b, 2, 2))
        labels.append(torch.tensor([[2, 3]], device=device).expand(b, 2))
    if not coords:
        return torch.zeros(b, 0, 2, device=device), torch.zeros(b, 0, dtype=torch.long, device=device)
    return torch.cat(coords, 1), torch.cat(labels, 1)
