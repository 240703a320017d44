"""Every backend available here produces the masks and scores of eager fp32 (within stated
tolerances), on the embedded default model's architecture and on a random ViT-B; backend
selection and missing-backend errors."""
import numpy as np
import pytest
import torch

from conftest import randomize_state_dict, synthetic_image
from sam_ros.engine.backends import BACKENDS, BackendUnavailable, make_predictor
from sam_ros.engine.predictor import SamPredictor
from sam_ros.model.build import build_sam

# Image sizes, odd ones included: the exported decoder stops at low-res logits, upscaling is shared,
# so masks must be right at any size (Meta's export is right only at its example's size).
SIZES = [(480, 640), (333, 517), (720, 1280), (601, 401)]


def _model(name: str, seed: int):
    m = build_sam(name)
    m.load_state_dict(randomize_state_dict(m.state_dict(), seed))
    return m.eval()


def _prompts(h, w):
    return [
        dict(point_coords=np.array([[w * 0.3, h * 0.4]]), point_labels=np.array([1]), multimask_output=True),
        dict(point_coords=np.array([[w * 0.3, h * 0.4], [w * 0.7, h * 0.6]]), point_labels=np.array([1, 0]),
             box=np.array([w * 0.1, h * 0.1, w * 0.8, h * 0.9]), multimask_output=False),
        dict(box=np.array([[w * 0.1, h * 0.2, w * 0.5, h * 0.7], [w * 0.4, h * 0.1, w * 0.9, h * 0.6]]),
             multimask_output=False),
    ]


def _compare(eager: SamPredictor, other: SamPredictor, sizes, emb_atol, logit_atol):
    for h, w in sizes:
        image = synthetic_image(h, w, seed=h)
        e1, e2 = eager.encode(image), other.encode(image)
        scale = float(e1.features.abs().max())
        assert float((e1.features - e2.features).abs().max()) <= emb_atol * scale
        for kw in _prompts(h, w):
            a = eager.decode(e1, return_logits=True, **kw)
            b = other.decode(e2, return_logits=True, **kw)
            assert a.masks.shape == b.masks.shape
            assert np.abs(a.masks - b.masks).max() <= logit_atol * max(1.0, np.abs(a.masks).max())
            assert np.abs(a.iou_predictions - b.iou_predictions).max() <= 1e-3
            agree = ((a.masks > 0) == (b.masks > 0)).mean()
            assert agree > 0.999, agree
        # A mask prompt fed back (the decoder_mask graph / path).
        kw = _prompts(h, w)[0]
        first = eager.decode(e1, **kw)
        mi = first.low_res_logits[:1]
        a = eager.decode(e1, kw["point_coords"], kw["point_labels"], mask_input=mi, multimask_output=False, return_logits=True)
        b = other.decode(e2, kw["point_coords"], kw["point_labels"], mask_input=mi, multimask_output=False, return_logits=True)
        assert np.abs(a.masks - b.masks).max() <= logit_atol * max(1.0, np.abs(a.masks).max())


def test_onnxruntime_matches_eager_on_the_default_architecture(tmp_path):
    eager = SamPredictor(_model("sam_ros_tiny", 1))
    onnx = make_predictor(_model("sam_ros_tiny", 1), backend="onnxruntime", cache_dir=str(tmp_path))
    # ORT fuses and reorders float32 arithmetic: 1e-4 relative on the embedding, 1e-3 on logits.
    _compare(eager, onnx, SIZES, emb_atol=1e-4, logit_atol=1e-3)
    # Exports are cached by weights hash: a second predictor reuses them.
    again = make_predictor(_model("sam_ros_tiny", 1), backend="onnxruntime", cache_dir=str(tmp_path))
    assert again.onnx_folder == onnx.onnx_folder


@pytest.mark.slow
def test_onnxruntime_matches_eager_on_vit_b(tmp_path):
    eager = SamPredictor(_model("vit_b", 2))
    onnx = make_predictor(_model("vit_b", 2), backend="onnxruntime", cache_dir=str(tmp_path))
    _compare(eager, onnx, SIZES[:2], emb_atol=1e-4, logit_atol=1e-3)


def test_compile_matches_eager(tmp_path):
    eager = SamPredictor(_model("sam_ros_tiny", 3))
    compiled = make_predictor(_model("sam_ros_tiny", 3), backend="compile", cache_dir=str(tmp_path))
    # Inductor fuses elementwise ops and may reassociate reductions: same tolerances as ORT.
    _compare(eager, compiled, SIZES[:2], emb_atol=1e-4, logit_atol=1e-3)
    assert any(p.is_dir() for p in (tmp_path / "inductor").iterdir())  # persistent cache written


def test_bf16_encoder_fp32_decoder_precision_per_part():
    eager = SamPredictor(_model("sam_ros_tiny", 4))
    mixed = make_predictor(_model("sam_ros_tiny", 4), backend="torch", encoder_dtype="bf16", decoder_dtype="fp32")
    assert mixed.model.image_encoder.patch_embed.seq[0].weight.dtype == torch.bfloat16  # fused on CPU
    assert mixed.model.mask_decoder.iou_token.weight.dtype == torch.float32
    image = synthetic_image(480, 640, seed=9)
    a = eager.decode(eager.encode(image), box=np.array([100, 100, 400, 300]), multimask_output=False)
    b = mixed.decode(mixed.encode(image), box=np.array([100, 100, 400, 300]), multimask_output=False)
    assert (a.masks == b.masks).mean() > 0.97


def test_backend_selection_and_errors():
    assert set(BACKENDS) == {"auto", "torch", "compile", "onnxruntime", "tensorrt"}
    with pytest.raises(BackendUnavailable, match="unknown backend 'cuda_magic'"):
        make_predictor(_model("sam_ros_tiny", 0), backend="cuda_magic")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="NVIDIA GPU with CUDA"):
            make_predictor(_model("sam_ros_tiny", 0), backend="tensorrt", device="cuda")
        from sam_ros.engine.factory import create_predictor

        with pytest.raises(RuntimeError, match="CUDA is not available"):
            create_predictor(device="cuda")
