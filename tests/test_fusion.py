"""The CPU-fused TinyViT (sam_ros.model.fusion, used by the torch backend on CPUs) computes what
MobileSAM's reference encoder computes, keeps a hookable module per layer, and is what
make_predictor hands out on a CPU."""
import copy

import numpy as np
import pytest
import torch

from conftest import make_pair, randomize_state_dict, synthetic_image
from sam_ros.engine.backends import make_predictor
from sam_ros.engine.predictor import SamPredictor
from sam_ros.model.build import build_sam
from sam_ros.model.fusion import FusedConv2d, FusedLinearGELU, fuse_tiny_vit
from sam_ros.model.tiny_vit import Conv2d_BN
from test_model_parity import EMBED_ATOL, assert_close


@pytest.fixture(scope="module")
def mobile_sam_pair():
    ref, ours, _ = make_pair("tiny_vit", seed=5)
    return ref, ours


def test_fused_mobile_sam_encoder_matches_reference(mobile_sam_pair):
    ref, ours = mobile_sam_pair
    fused = fuse_tiny_vit(copy.deepcopy(ours.image_encoder))
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = ref.image_encoder(x)
        got = fused(x)
    assert got.shape == want.shape == (1, 256, 64, 64)
    assert float(want.std()) > 0.3  # a non-trivial embedding
    assert_close(got, want, EMBED_ATOL, "fused TinyViT embedding")


def test_fused_default_architecture_matches_unfused_and_keeps_layers():
    model = build_sam("sam_ros_tiny")
    model.load_state_dict(randomize_state_dict(model.state_dict(), 6))
    plain = model.image_encoder.eval()
    n_conv_bn = sum(isinstance(m, Conv2d_BN) for m in plain.modules())
    fused = fuse_tiny_vit(copy.deepcopy(plain))
    assert not any(isinstance(m, (Conv2d_BN, torch.nn.BatchNorm2d)) for m in fused.modules())
    # One module with parameters per former Conv2d_BN (+ the neck's two convolutions), so that
    # forward pre-hooks (layer preemption) still fire at every layer.
    assert sum(isinstance(m, FusedConv2d) for m in fused.modules()) == n_conv_bn + 2
    assert sum(isinstance(m, FusedLinearGELU) for m in fused.modules()) == 4 + 2 + 2  # one per MLP
    calls = []
    for m in fused.modules():
        if isinstance(m, FusedConv2d):
            m.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = plain(x), fused(x)
        again = fused(x)  # the pre-packed neck weight is reused
    assert len(calls) == 2 * (n_conv_bn + 2)
    assert_close(got, want, EMBED_ATOL, "fused default encoder")
    assert torch.equal(got, again)
    # With autograd on, the fused modules take the plain F.conv2d / F.linear path: same numbers.
    assert_close(fused(x).detach(), want, EMBED_ATOL, "fused default encoder, autograd on")


def test_torch_backend_on_cpu_is_fused_and_predicts_like_unfused():
    model = build_sam("sam_ros_tiny")
    model.load_state_dict(randomize_state_dict(model.state_dict(), 7))
    eager = SamPredictor(copy.deepcopy(model))
    fast = make_predictor(copy.deepcopy(model), backend="torch")
    assert getattr(fast.model.image_encoder, "fused", False)
    image = synthetic_image(480, 640, seed=4)
    e1, e2 = eager.encode(image), fast.encode(image)
    assert_close(e2.features, e1.features, EMBED_ATOL, "embedding")
    box = np.array([120, 90, 420, 380])
    a = eager.decode(e1, box=box, multimask_output=False, return_logits=True)
    b = fast.decode(e2, box=box, multimask_output=False, return_logits=True)
    assert_close(b.masks, a.masks, 1e-3, "mask logits")
    assert_close(b.iou_predictions, a.iou_predictions, 1e-4, "IoU predictions")


def test_mbconv_row_strips_compute_the_whole_image_result():
    from sam_ros.model.fusion import FusedMBConv
    from sam_ros.model.tiny_vit import MBConv

    block = MBConv(16, 16, 4.0)
    block.load_state_dict(randomize_state_dict(block.state_dict(), 8))
    block.eval()
    x = torch.randn(1, 16, 37, 29, generator=torch.Generator().manual_seed(2)).contiguous(
        memory_format=torch.channels_last)
    whole = FusedMBConv(block, strip_bytes=1 << 30)
    strips = FusedMBConv(block, strip_bytes=5 * 29 * 64 * 4)  # 5-row strips, a short last one
    with torch.inference_mode():
        want = block(x)
        a, b = whole(x), strips(x)
    assert_close(a, want, 1e-5, "fused MBConv")
    assert_close(b, a, 1e-6, "MBConv on row strips")
