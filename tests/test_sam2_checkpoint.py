"""SAM 2 checkpoints: the official file layout (state dict under "model"), variant inference for
every official configuration, strict loading, clear errors, and create_predictor on a SAM 2 file."""
import os

import numpy as np
import pytest
import torch

from conftest import synthetic_image
from sam_ros.engine.factory import create_predictor
from sam_ros.engine.sam2_predictor import Sam2Predictor
from sam_ros.model.checkpoint import CheckpointError, config_name, infer_config, load_model, save_safetensors
from sam_ros.model.sam2 import SAM2_CONFIGS, build_sam2
from test_sam2_parity import LARGE_REDUCED, TINY, randomize_sam2


def _meta_state_dict(config):
    with torch.device("meta"):
        return build_sam2(config).state_dict()


def _official_file(tmp_path, name, drop=(), extra=None):
    """A file laid out like Meta's sam2*.pt: {"model": state dict}. Every tensor is a stride-0 view of
    its own value (the key's index), so the file is tiny but a mixed-up key would show."""
    sd = {k: torch.full((1,), float(i)).expand(v.shape) for i, (k, v) in enumerate(_meta_state_dict(name).items())
          if k not in drop}
    sd.update(extra or {})
    path = tmp_path / f"{name}.pt"
    torch.save({"model": sd}, path)
    assert os.path.getsize(path) < 2_000_000
    return path, sd


@pytest.mark.parametrize("name", sorted(SAM2_CONFIGS))
def test_every_official_configuration_is_recognised(name):
    inferred = infer_config(_meta_state_dict(name))
    assert inferred == SAM2_CONFIGS[name]
    assert config_name(inferred) == name


@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "sam2_hiera_s"])
def test_official_file_loads_strictly(tmp_path, name):
    path, sd = _official_file(tmp_path, name)
    model = load_model(path)
    assert model.config == SAM2_CONFIGS[name] and not model.training
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


def test_version_2_0_file_as_2_1_variant(tmp_path):
    path, _ = _official_file(tmp_path, "sam2_hiera_t")
    with pytest.raises(CheckpointError) as info:
        load_model(path, variant="sam2.1_hiera_t")
    msg = str(info.value)
    assert os.fspath(path) in msg and "missing keys" in msg and "obj_ptr_tpos_proj" in msg


def test_tiny_file_as_large_variant(tmp_path):
    path, _ = _official_file(tmp_path, "sam2.1_hiera_t")
    with pytest.raises(CheckpointError) as info:
        load_model(path, variant="sam2.1_hiera_l")
    assert "shape mismatches" in str(info.value) and "image_encoder.trunk." in str(info.value)


def test_missing_and_unexpected_key(tmp_path):
    path, _ = _official_file(tmp_path, "sam2.1_hiera_t", drop=("no_obj_ptr",),
                             extra={"memory_encoder.extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert "1 missing keys" in msg and "no_obj_ptr" in msg and "memory_encoder.extra.weight" in msg


def test_unofficial_trunk_needs_its_config(tmp_path):
    model = build_sam2(LARGE_REDUCED)
    path = tmp_path / "reduced.pt"
    torch.save({"model": model.state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert os.fspath(path) in str(info.value) and "none of the official sizes" in str(info.value)


def test_trunk_without_heads(tmp_path):
    sd = {k: v for k, v in _meta_state_dict("sam2.1_hiera_t").items() if k.startswith("image_encoder.")}
    path = tmp_path / "trunk_only.pt"
    torch.save({"model": {k: torch.zeros(1).expand(v.shape) for k, v in sd.items()}}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "SAM 2 architecture" in str(info.value) and "missing" in str(info.value)


def random_sam2_file(folder, config, seed):
    """A SAM 2 model of `config` with random weights, saved as our safetensors with its config:
    (path, model)."""
    model = build_sam2(config)
    model.load_state_dict(randomize_sam2(model.state_dict(), seed), strict=True)
    path = folder / "sam2_random.safetensors"
    save_safetensors(model, path)
    return path, model.eval()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """Our SAM 2.1 tiny (256 px input) with random weights, as safetensors with its config."""
    return random_sam2_file(tmp_path_factory.mktemp("sam2"), TINY, 11)


def test_safetensors_round_trip_and_create_predictor(tiny_file):
    path, model = tiny_file
    predictor = create_predictor(checkpoint=os.fspath(path))
    assert isinstance(predictor, Sam2Predictor)
    assert predictor.model.config == TINY
    for k, v in model.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[k], v), k
    image = synthetic_image(120, 160, seed=5)
    emb = predictor.encode(image)
    same = build_sam2(TINY)
    same.load_state_dict(model.state_dict(), strict=True)
    direct = Sam2Predictor(same)
    emb2 = direct.encode(image)
    assert torch.equal(emb.features, emb2.features)
    click = dict(point_coords=np.array([[80.0, 60.0]]), point_labels=np.array([1]))
    a, b = predictor.decode(emb, **click), direct.decode(emb2, **click)
    assert a.masks.shape == (3, 120, 160)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.object_score_logits, b.object_score_logits)


def test_other_backends_refuse_sam2(tiny_file):
    from sam_ros.engine.backends import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="SAM 2"):
        create_predictor(checkpoint=os.fspath(tiny_file[0]), backend="onnxruntime")
