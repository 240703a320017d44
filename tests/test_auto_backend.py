"""`backend: auto`: picks the fastest candidate that agrees with eager fp32 on this machine,
caches the choice under a key with the CPU model in it, reuses it, rejects a candidate whose
output is wrong (however fast), and stays out of the way of a forced backend."""
import json
import logging
import os

import numpy as np
import pytest
import torch

from conftest import randomize_state_dict, synthetic_image
from sam_ros.engine.backends import make_predictor
from sam_ros.engine.backends.auto import BF16, CACHE_FILE, Candidate, choose_backend
from sam_ros.engine.cpu_info import cpu_info
from sam_ros.engine.predictor import SamPredictor
from sam_ros.model.build import build_sam


def _model(seed: int):
    m = build_sam("sam_ros_tiny")
    m.load_state_dict(randomize_state_dict(m.state_dict(), seed))
    return m.eval()


def _zero_encoder(model):
    """A real predictor whose encoder returns zeros: the fastest candidate of all, and wrong."""
    grid = model.prompt_encoder.image_embedding_size
    return SamPredictor(model, image_encoder=lambda x: torch.zeros(1, model.prompt_encoder.embed_dim, *grid))


def _candidates():
    cands = [Candidate("torch-fp32", "torch"), Candidate("zero-encoder", "torch", build=_zero_encoder)]
    if cpu_info().has_bf16:
        cands.append(Candidate("torch-bf16", "torch", "bf16", tolerance=BF16))
    return cands


def test_picks_a_passing_candidate_rejects_a_wrong_one_and_caches_by_cpu(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sam_ros")
    choice, predictor = choose_backend(_model(1), cache_dir=str(tmp_path), candidates=_candidates(), rounds=1)
    assert choice.name in ("torch-fp32", "torch-bf16") and not choice.from_cache
    assert "zero-encoder" in choice.rejected and choice.rejected["zero-encoder"].startswith("parity: embedding")
    assert "zero-encoder" not in choice.timings_ms and choice.name in choice.timings_ms
    assert any("backend auto -> torch" in r.message for r in caplog.records)
    # The winner's predictor is returned ready and predicts like eager fp32.
    eager = SamPredictor(_model(1))
    image = synthetic_image(300, 400, seed=2)
    a = eager.decode(eager.encode(image), box=np.array([50, 40, 300, 250]), multimask_output=False)
    b = predictor.decode(predictor.encode(image), box=np.array([50, 40, 300, 250]), multimask_output=False)
    assert (a.masks == b.masks).mean() > (0.999 if choice.encoder_dtype == "fp32" else 0.97)
    # The cache: one JSON entry keyed by CPU model + ISA flags + torch + weights + sizes.
    data = json.loads((tmp_path / CACHE_FILE).read_text())
    (key, record), = data.items()
    info = cpu_info()
    assert key.startswith(info.model) and " ".join(info.flags) in key
    assert f"torch {torch.__version__}" in key and "input 384" in key and "frame 480x640" in key
    assert record["name"] == choice.name and record["cpu"] == info.describe()


def test_reuses_the_cached_choice_and_measures_again_for_other_weights(tmp_path):
    first, _ = choose_backend(_model(2), cache_dir=str(tmp_path), candidates=_candidates(), rounds=1)
    path = tmp_path / CACHE_FILE
    before = path.read_text()
    again, predictor = choose_backend(_model(2), cache_dir=str(tmp_path), candidates=_candidates())
    assert again.from_cache and predictor is None
    assert (again.name, again.key, again.timings_ms) == (first.name, first.key, first.timings_ms)
    assert path.read_text() == before
    other, _ = choose_backend(_model(3), cache_dir=str(tmp_path), candidates=_candidates(), rounds=1)
    assert not other.from_cache and other.key != first.key
    assert len(json.loads(path.read_text())) == 2


def test_no_passing_candidate_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="no candidate passed its parity check.*zero-encoder.*parity"):
        choose_backend(_model(4), cache_dir=str(tmp_path),
                       candidates=[Candidate("zero-encoder", "torch", build=_zero_encoder)])


def test_default_auto_end_to_end_and_forced_backend_bypasses_it(tmp_path):
    # Forced: no measurement, no cache file.
    forced = make_predictor(_model(5), backend="torch", cache_dir=str(tmp_path))
    assert forced.backend_name == "torch" and not hasattr(forced, "auto_choice")
    assert not os.path.exists(tmp_path / CACHE_FILE)
    # auto with this machine's default candidates (torch fp32 / bf16, onnxruntime).
    p = make_predictor(_model(5), backend="auto", cache_dir=str(tmp_path))
    choice = p.auto_choice
    assert p.backend_name == choice.backend and choice.backend in ("torch", "onnxruntime")
    assert set(choice.timings_ms) | set(choice.rejected) >= {"torch-fp32", "onnxruntime-fp32"}
    assert os.path.exists(tmp_path / CACHE_FILE)
    again = make_predictor(_model(5), backend="auto", cache_dir=str(tmp_path))
    assert again.auto_choice.from_cache and again.backend_name == choice.backend
