"""Checkpoint loading: official .pth layout, architecture inference, safetensors, failure messages."""
import dataclasses
import os

import pytest
import torch

from conftest import VIT_SMALL, VIT_TINY, randomize_state_dict
from sam_ros.model.build import MODEL_CONFIGS, SamConfig, TinyViTConfig, ViTConfig, build_sam, get_config
from sam_ros.model.checkpoint import (
    CONFIG_METADATA_KEY,
    CheckpointError,
    config_name,
    infer_config,
    load_model,
    read_state_dict,
    save_safetensors,
)


def _random_model(config, seed=0):
    model = build_sam(config)
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed), strict=True)
    return model


def _assert_same_weights(model, state_dict):
    sd = model.state_dict()
    assert set(sd) == set(state_dict)
    for k, v in sd.items():
        assert torch.equal(v, state_dict[k]), k


def _meta_state_dict(config):
    """Parameter names and shapes of a model without allocating its weights."""
    with torch.device("meta"):
        return build_sam(config).state_dict()


@pytest.fixture(scope="module")
def tiny_sd():
    """State dict of our tiny ViT config with random values (official key layout)."""
    return _random_model(VIT_TINY, seed=1).state_dict()


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory, tiny_sd):
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(dict(tiny_sd), path)
    return path


@pytest.fixture(scope="module")
def vit_t_pth(tmp_path_factory):
    model = _random_model("vit_t", seed=2)
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    torch.save(dict(model.state_dict()), path)
    return path, model.state_dict()


# ---- the official layout -----------------------------------------------------------------------

def test_official_layout_is_a_plain_prefixed_state_dict(tiny_pth):
    obj = torch.load(tiny_pth, weights_only=True)
    assert isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())
    assert {k.split(".")[0] for k in obj} == {"image_encoder", "prompt_encoder", "mask_decoder"}


def test_load_inferred_architecture(tiny_pth, tiny_sd):
    model = load_model(tiny_pth)
    assert model.config == VIT_TINY
    assert not model.training
    _assert_same_weights(model, tiny_sd)


def test_load_vit_t_with_variant_and_inferred(vit_t_pth):
    path, sd = vit_t_pth
    given = load_model(path, variant="vit_t")
    assert given.config == get_config("vit_t")
    _assert_same_weights(given, sd)
    inferred = load_model(os.fspath(path))  # str path too
    _assert_same_weights(inferred, sd)
    # Non-persistent buffers (TinyViT's bias index tables) must match as well.
    for (n1, b1), (n2, b2) in zip(inferred.named_buffers(), given.named_buffers()):
        assert n1 == n2 and torch.equal(b1, b2), n1


INFERABLE_VIT_CONFIGS = {
    "small": VIT_SMALL,
    "tiny": VIT_TINY,
    "img512": SamConfig(ViTConfig(64, 3, 4, (2,), 14), img_size=512),
    "window8": SamConfig(ViTConfig(64, 4, 2, (0, 3), 8), img_size=512),
    "patch8_no_global": SamConfig(ViTConfig(32, 2, 2, (), 7, patch_size=8), img_size=256),
    "small_decoder": SamConfig(ViTConfig(32, 2, 2, (1,), 14), img_size=1024, prompt_embed_dim=128,
                               mask_in_chans=8, decoder_depth=1, decoder_mlp_dim=512, iou_head_hidden_dim=64),
}


@pytest.mark.parametrize("name", list(INFERABLE_VIT_CONFIGS))
def test_infer_config_reduced_vit(name):
    cfg = INFERABLE_VIT_CONFIGS[name]
    assert infer_config(_meta_state_dict(cfg)) == cfg
    assert config_name(cfg) is None


@pytest.mark.parametrize("name", [
    "vit_b", "vit_l", "vit_h",
    "vit_t",
])
def test_registry_names_recognised(name):
    inferred = infer_config(_meta_state_dict(name))
    assert config_name(inferred) == name
    assert inferred == MODEL_CONFIGS[name]


def test_inferred_vit_t_config_builds_the_same_model():
    """Whatever the stage-0 heads value, the inferred TinyViT must have vit_t's parameters."""
    sd = _meta_state_dict("vit_t")
    inferred = infer_config(sd)
    assert isinstance(inferred.encoder, TinyViTConfig)
    assert inferred.encoder.embed_dims == (64, 128, 160, 320)
    assert inferred.encoder.depths == (2, 2, 6, 2)
    assert inferred.encoder.num_heads[1:] == (4, 5, 10)
    assert inferred.encoder.window_sizes[1:] == (7, 14, 7)
    assert inferred.encoder.num_classes == 1000
    assert {k: v.shape for k, v in _meta_state_dict(inferred).items()} == {k: v.shape for k, v in sd.items()}


# ---- safetensors and nested files --------------------------------------------------------------

# decoder_heads cannot be seen in the weights (it does not change any shape): it only survives a
# round trip if the config stored with the weights is used.
NON_INFERABLE = dataclasses.replace(VIT_TINY, decoder_heads=4)


def test_safetensors_round_trip_keeps_config(tmp_path):
    model = _random_model(NON_INFERABLE, seed=4)
    path = tmp_path / "model.safetensors"
    save_safetensors(model, path, metadata={"note": "hello"})
    from safetensors import safe_open
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["note"] == "hello"
    assert SamConfig.from_json(meta[CONFIG_METADATA_KEY]) == NON_INFERABLE

    loaded = load_model(path)
    assert loaded.config == NON_INFERABLE
    assert loaded.mask_decoder.transformer.num_heads == 4
    _assert_same_weights(loaded, model.state_dict())
    sd, cfg = read_state_dict(path)
    assert cfg == NON_INFERABLE


def test_safetensors_without_config_is_inferred(tmp_path, tiny_sd):
    from safetensors.torch import save_file
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sd.items()}, os.fspath(path))
    loaded = load_model(path)
    assert loaded.config == VIT_TINY
    _assert_same_weights(loaded, tiny_sd)


def test_tinyvit_config_json_round_trip():
    for cfg in (get_config("vit_t"), NON_INFERABLE, VIT_SMALL):
        assert SamConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_nested_state_dict(tmp_path, tiny_sd, key):
    path = tmp_path / "train.pth"
    torch.save({key: tiny_sd, "epoch": 7, "optimizer": {"lr": 1e-4}}, path)
    loaded = load_model(path)
    assert loaded.config == VIT_TINY
    _assert_same_weights(loaded, tiny_sd)


def test_nested_state_dict_with_stored_config(tmp_path):
    model = _random_model(NON_INFERABLE, seed=5)
    path = tmp_path / "train.pth"
    torch.save({"model": model.state_dict(), "config": NON_INFERABLE.to_json()}, path)
    loaded = load_model(path)
    assert loaded.config == NON_INFERABLE
    _assert_same_weights(loaded, model.state_dict())


# ---- failures: every message names the file and the problem ---------------------------------------

def _expect_error(path, *fragments, variant=None):
    with pytest.raises(CheckpointError) as info:
        load_model(path, variant=variant)
    msg = str(info.value)
    assert os.fspath(path) in msg, f"message does not name the file: {msg}"
    for fragment in fragments:
        assert fragment.lower() in msg.lower(), f"{fragment!r} not in: {msg}"
    return msg


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.pth", "not found")


def test_directory(tmp_path):
    _expect_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    _expect_error(path, "empty")


def test_truncated_file(tmp_path, tiny_pth):
    data = tiny_pth.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "cannot read checkpoint", "truncated")


@pytest.mark.parametrize("content", [os.urandom(4096), b"this is a text file, not weights\n" * 20],
                         ids=["random_bytes", "text"])
def test_not_a_pytorch_file(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    _expect_error(path, "cannot read checkpoint", "PyTorch weights file")


class NotWeights:
    def __init__(self):
        self.payload = torch.zeros(3)


def test_pickle_that_is_not_weights_is_refused(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"image_encoder.x": NotWeights()}, path)
    msg = _expect_error(path, "cannot read checkpoint")
    assert "weights only" in msg.lower() or "weights_only" in msg.lower(), msg


def test_state_dict_holding_non_tensors(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"image_encoder.a": torch.zeros(2), "image_encoder.b": [1, 2]}, path)
    _expect_error(path, "state dict of tensors")


def test_state_dict_without_sam_prefixes(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, path)
    _expect_error(path, "not a SAM checkpoint", "image_encoder.", "conv1.weight")


def test_vit_b_file_loaded_as_vit_l(tmp_path):
    # ViT-B's names and shapes without its 360 MB: every tensor is a stride-0 view of one value.
    one = torch.zeros(1)
    sd = {k: one.expand(v.shape) for k, v in _meta_state_dict("vit_b").items()}
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(sd, path)
    assert os.path.getsize(path) < 1_000_000
    msg = _expect_error(path, "vit_l", "missing keys", "shape mismatches", variant="vit_l")
    assert "image_encoder.blocks.12." in msg  # a block ViT-B does not have
    assert "(1, 64, 64, 768)" in msg and "(1, 64, 64, 1024)" in msg  # pos_embed shapes


def test_unknown_variant(tiny_pth):
    with pytest.raises(ValueError, match="vit_x"):
        load_model(tiny_pth, variant="vit_x")


def test_one_tensor_of_wrong_shape(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    key = "mask_decoder.output_hypernetworks_mlps.2.layers.1.weight"
    sd[key] = torch.zeros(256, 128)
    path = tmp_path / "bad_shape.pth"
    torch.save(sd, path)
    msg = _expect_error(path, "1 shape mismatches", key, "(256, 128)", "(256, 256)")
    assert "missing" not in msg and "unexpected" not in msg


def test_extra_and_missing_key(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    del sd["mask_decoder.iou_prediction_head.layers.2.bias"]
    sd["mask_decoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "keys.pth"
    torch.save(sd, path)
    _expect_error(path, "1 missing keys", "iou_prediction_head.layers.2.bias", "1 unexpected keys",
                  "mask_decoder.extra.weight")


def test_encoder_only_file_with_variant(tmp_path, vit_t_pth):
    _, sd = vit_t_pth
    enc = {k: v for k, v in sd.items() if k.startswith("image_encoder.")}
    path = tmp_path / "encoder_only.pt"
    torch.save(enc, path)
    _expect_error(path, "missing keys", "prompt_encoder.", variant="vit_t")


def test_encoder_only_file_inferred(tmp_path, vit_t_pth):
    _, sd = vit_t_pth
    enc = {k: v for k, v in sd.items() if k.startswith("image_encoder.")}
    path = tmp_path / "encoder_only.pt"
    torch.save(enc, path)
    _expect_error(path, "architecture", "mask_decoder.")


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    _expect_error(path, "cannot read safetensors file")
