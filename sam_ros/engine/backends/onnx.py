"""The `onnxruntime` backend: the image encoder and the prompt encoder + mask decoder exported to
ONNX and run in ONNX Runtime.

Graphs (cached under <cache_dir>/onnx/<weights hash>/):
- encoder.onnx: image (1 x 3 x S x S, normalised and padded) -> image_embeddings (1 x C x h x w)
- decoder.onnx / decoder_mask.onnx (without / with a mask prompt):
  image_embeddings, point_coords (B x N x 2, pixels of the resized input frame), point_labels
  (B x N: 1 foreground, 0 background, -1 padding, 2 / 3 box corners)[, mask_input B x 1 x L x L]
  -> low_res_masks (B x 4 x L x L), iou_predictions (B x 4).
  B (objects) and N (points) are dynamic.
The graphs stop at low-res logits: upscaling to the camera image runs in the same (tested) code as
every other backend, so masks are right at any image size. (Meta's export bakes one image size
into its upscaling and is wrong for every other.)
"""
import os
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..predictor import SamPredictor
from . import BackendUnavailable, weights_hash

OPSET = 17


class SamOnnxDecoder(nn.Module):
    """Prompt encoder + mask decoder with prompts as (coords, labels), box corners as labels 2/3."""

    def __init__(self, model, with_mask: bool) -> None:
        super().__init__()
        self.model = model
        self.with_mask = with_mask

    def forward(self, image_embeddings, point_coords, point_labels, mask_input: Optional[torch.Tensor] = None):
        pe = self.model.prompt_encoder
        emb = pe.pe_layer.forward_with_coords(point_coords + 0.5, pe.input_image_size)
        lab = point_labels.unsqueeze(-1)
        emb = emb * (lab != -1).to(emb.dtype)
        table = [pe.not_a_point_embed.weight] + [e.weight for e in pe.point_embeddings]  # labels -1, 0, 1, 2, 3
        for value, w in zip((-1, 0, 1, 2, 3), table):
            emb = emb + (lab == value).to(emb.dtype) * w
        if self.with_mask:
            dense = pe.mask_downscaling(mask_input)
        else:
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.model.mask_decoder.predict_masks(image_embeddings, pe.get_dense_pe(), emb, dense)


class _EncoderWrapper(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image):
        return self.encoder(image)


def export_encoder(model, path: str) -> None:
    s = model.img_size
    torch.onnx.export(_EncoderWrapper(model.image_encoder).eval(), (torch.zeros(1, 3, s, s),), path,
                      input_names=["image"], output_names=["image_embeddings"], opset_version=OPSET,
                      dynamo=False, do_constant_folding=True)


def export_decoder(model, path: str, with_mask: bool) -> None:
    grid = model.prompt_encoder.image_embedding_size
    c = model.prompt_encoder.embed_dim
    low = model.prompt_encoder.mask_input_size
    args = [torch.randn(1, c, *grid), torch.rand(2, 3, 2) * model.img_size, torch.tensor([[1, 0, -1], [2, 3, 1]])]
    names = ["image_embeddings", "point_coords", "point_labels"]
    axes = {"point_coords": {0: "objects", 1: "points"}, "point_labels": {0: "objects", 1: "points"},
            "low_res_masks": {0: "objects"}, "iou_predictions": {0: "objects"}}
    if with_mask:
        args.append(torch.randn(2, 1, *low))
        names.append("mask_input")
        axes["mask_input"] = {0: "objects"}
    torch.onnx.export(SamOnnxDecoder(model, with_mask).eval(), tuple(args), path, input_names=names,
                      output_names=["low_res_masks", "iou_predictions"], dynamic_axes=axes, opset_version=OPSET,
                      dynamo=False, do_constant_folding=True)


def export_all(model, folder: str) -> Tuple[str, str, str]:
    """Export the three graphs into folder (skipping those already there)."""
    os.makedirs(folder, exist_ok=True)
    paths = (os.path.join(folder, "encoder.onnx"), os.path.join(folder, "decoder.onnx"),
             os.path.join(folder, "decoder_mask.onnx"))
    model = model.float().eval()
    with torch.no_grad():
        for path, fn in zip(paths, (lambda p: export_encoder(model, p), lambda p: export_decoder(model, p, False),
                                    lambda p: export_decoder(model, p, True))):
            if not os.path.exists(path):
                tmp = path + ".tmp.onnx"
                fn(tmp)
                os.replace(tmp, path)
    return paths


def _providers(device: str) -> List[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available] + wanted
    return wanted


class OnnxPredictor(SamPredictor):
    """SamPredictor running encoder and decoder graphs in ONNX Runtime (float32)."""

    def __init__(self, model, device: str = "cpu", cache_dir: str = "", threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("the onnxruntime backend needs `pip install onnxruntime` "
                                     "(or onnxruntime-gpu for CUDA)") from e
        super().__init__(model, device="cpu", encoder_dtype="fp32", decoder_dtype="fp32")
        folder = os.path.join(cache_dir, "onnx", weights_hash(self.model))
        enc, dec, dec_mask = export_all(self.model, folder)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        providers = _providers(device)
        self.onnx_folder = folder
        self.providers = providers
        self._enc = ort.InferenceSession(enc, opts, providers=providers)
        self._dec = ort.InferenceSession(dec, opts, providers=providers)
        self._dec_mask = ort.InferenceSession(dec_mask, opts, providers=providers)
        self._image_encoder = self._run_encoder

    def _run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self._enc.run(None, {"image": x.float().cpu().numpy()})
        return torch.from_numpy(out)

    def _decode_low_res(self, embedding, point_coords, point_labels, boxes, mask_input, tokens=slice(None)):
        b = next(t.shape[0] for t in (point_coords, boxes, mask_input) if t is not None)
        coords: List[np.ndarray] = []
        labels: List[np.ndarray] = []
        if point_coords is not None:
            coords.append(point_coords.float().cpu().numpy())
            labels.append(point_labels.cpu().numpy().astype(np.int64))
            if boxes is None:  # the prompt encoder's padding point
                coords.append(np.zeros((b, 1, 2), np.float32))
                labels.append(np.full((b, 1), -1, np.int64))
        if boxes is not None:
            coords.append(boxes.float().cpu().numpy().reshape(b, 2, 2))
            labels.append(np.tile(np.array([[2, 3]], np.int64), (b, 1)))
        if not coords:  # mask prompt only
            coords.append(np.zeros((b, 0, 2), np.float32))
            labels.append(np.zeros((b, 0), np.int64))
        feeds = {"image_embeddings": embedding.features.float().cpu().numpy(),
                 "point_coords": np.concatenate(coords, 1).astype(np.float32),
                 "point_labels": np.concatenate(labels, 1)}
        if mask_input is not None:
            feeds["mask_input"] = mask_input.float().cpu().numpy()
            low, iou = self._dec_mask.run(None, feeds)
        else:
            low, iou = self._dec.run(None, feeds)
        return torch.from_numpy(low)[:, tokens], torch.from_numpy(iou)[:, tokens]
