"""The CUDA path (skipped without a GPU): parity with the CPU, reduced precision, the on-device
preprocessing, encoder/decoder stream overlap, torch.compile and TensorRT backends."""
import numpy as np
import pytest
import torch

from conftest import VIT_SMALL, randomize_state_dict, synthetic_image
from sam_ros.engine.backends import BackendUnavailable, make_predictor
from sam_ros.engine.predictor import SamPredictor
from sam_ros.model.build import build_sam

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _model(cfg=VIT_SMALL, seed=2):
    m = build_sam(cfg)
    m.load_state_dict(randomize_state_dict(m.state_dict(), seed))
    return m.eval()


@pytest.fixture(scope="module")
def image():
    return synthetic_image(720, 1280, seed=7)


@pytest.fixture(scope="module")
def cpu_result(image):
    p = SamPredictor(_model())
    emb = p.encode(image)
    return emb, p.decode(emb, box=np.array([[100, 100, 600, 500], [700, 50, 1200, 700]]), multimask_output=False,
                         return_logits=True)


@pytest.fixture
def no_tf32():
    """cuDNN convolutions default to TF32 on Ampere+ (about 1e-3 relative error); fp32 parity
    with the CPU is checked with true fp32 arithmetic."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_cuda_fp32_matches_cpu(image, cpu_result, no_tf32):
    emb_cpu, ref = cpu_result
    p = SamPredictor(_model(), device="cuda")
    emb = p.encode(image)
    # The GPU resizes on the device (antialiased bilinear) and the CPU with OpenCV: compare the
    # decoder on the same embedding first, then the end-to-end masks more loosely.
    same = p.decode_torch(type(emb)(emb_cpu.features.cuda(), emb_cpu.original_size, emb_cpu.input_size),
                          boxes=torch.tensor([[100, 100, 600, 500], [700, 50, 1200, 700]], dtype=torch.float32) * (1024 / 1280),
                          multimask_output=False, return_logits=True)
    assert torch.allclose(same.masks.cpu(), torch.from_numpy(ref.masks), atol=2e-3, rtol=1e-3)
    out = p.decode(emb, box=np.array([[100, 100, 600, 500], [700, 50, 1200, 700]]), multimask_output=False)
    agree = ((out.masks > 0) == (ref.masks > 0)).mean()
    assert agree > 0.98, agree


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_reduced_precision_agrees(image, cpu_result, dtype):
    _, ref = cpu_result
    p = SamPredictor(_model(), device="cuda", encoder_dtype=dtype)
    out = p.decode(p.encode(image), box=np.array([[100, 100, 600, 500], [700, 50, 1200, 700]]), multimask_output=False)
    assert ((out.masks > 0) == (ref.masks > 0)).mean() > 0.95
    assert np.abs(out.iou_predictions - ref.iou_predictions).max() < 0.05


def test_encode_overlaps_decode_on_separate_streams(image):
    """Encoding the next frame (encoder stream) while decoding on the current one (default stream)
    gives the same results as doing them one after the other."""
    p = SamPredictor(_model(), device="cuda")
    frames = [image, np.ascontiguousarray(image[:, ::-1])]
    emb0 = p.encode(frames[0])
    box = np.array([300, 200, 900, 600])
    sequential = p.decode(emb0, box=box, multimask_output=False).masks
    emb1 = p.encode(frames[1])          # queued on the encoder stream
    overlapped = p.decode(emb0, box=box, multimask_output=False).masks
    later = p.decode(emb1, box=box, multimask_output=False).masks
    assert np.array_equal(sequential, overlapped)
    assert later.shape == sequential.shape


def test_compile_backend_on_cuda(image, cpu_result):
    _, ref = cpu_result
    p = make_predictor(_model(), backend="compile", device="cuda", encoder_dtype="fp32")
    out = p.decode(p.encode(image), box=np.array([[100, 100, 600, 500], [700, 50, 1200, 700]]), multimask_output=False)
    assert ((out.masks > 0) == (ref.masks > 0)).mean() > 0.98


def test_tensorrt_backend(image, cpu_result, tmp_path):
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="torch-tensorrt"):
            make_predictor(_model(), backend="tensorrt", device="cuda")
        pytest.skip("torch-tensorrt is not installed (checked that the error says so)")
    _, ref = cpu_result
    p = make_predictor(_model(), backend="tensorrt", device="cuda", encoder_dtype="fp16", cache_dir=str(tmp_path))
    out = p.decode(p.encode(image), box=np.array([[100, 100, 600, 500], [700, 50, 1200, 700]]), multimask_output=False)
    assert ((out.masks > 0) == (ref.masks > 0)).mean() > 0.95
