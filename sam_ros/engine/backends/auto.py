"""The `auto` backend: on first use per machine and model, time the backends and precisions that
can run here, keep the fastest whose masks agree with eager fp32 torch, and remember the choice.

Key of a choice (one JSON file, `<cache_dir>/auto_backend.json`): the CPU model and its ISA flags
(AVX-512, AVX512-BF16, AMX: the same code is fastest in different ways on different CPU kinds),
the torch version, the weights' hash, the model's input size, the probe frame size and the
device. A later start with the same key builds the chosen backend directly (and its own caches
- exports, compiled kernels - make that fast too).

A candidate is accepted when, on a probe frame and three prompts (a point, a box, a mask fed
back), its embedding, mask logits, IoU predictions and binary masks agree with eager fp32 torch
within the tolerances the tests state (tests/test_backends.py): fp32 backends 1e-4 of the
embedding's range, 1e-3 on logits, 1e-3 on IoU, 99.9% of mask pixels; bf16 encoders 5% of the
embedding's range and 97% of mask pixels. Among those accepted, the one with the lowest encoder
time + one-point decoder time (medians over interleaved rounds) wins.

`compile` is tried only when asked (`try_compile=True`): its first compile takes minutes on a
small CPU (2 cores: 100-200 s), too long for a robot's first start to pay unasked.
"""
import copy
import json
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..cpu_info import cpu_info
from ..predictor import SamPredictor

log = logging.getLogger("sam_ros")

CACHE_FILE = "auto_backend.json"
PROBE_SIZE = (480, 640)


@dataclass(frozen=True)
class Tolerance:
    """Agreement required with eager fp32 torch (see the module docstring)."""
    embedding: float     # max |diff| / max |reference embedding|
    logits: float        # max |diff| / max(1, max |reference logit|)
    iou: float           # max |diff| of IoU predictions
    mask_agreement: float  # fraction of pixels with the same binary mask


FP32 = Tolerance(embedding=1e-4, logits=1e-3, iou=1e-3, mask_agreement=0.999)
BF16 = Tolerance(embedding=5e-2, logits=float("inf"), iou=float("inf"), mask_agreement=0.97)


@dataclass
class Candidate:
    """One backend + precision to try. `build` makes its predictor from a private copy of the
    model (default: make_predictor with these settings)."""
    name: str
    backend: str
    encoder_dtype: str = "fp32"
    decoder_dtype: str = "fp32"
    tolerance: Tolerance = FP32
    build: Optional[Callable[..., SamPredictor]] = None


@dataclass
class AutoChoice:
    """What `auto` chose and why (also the cache record)."""
    name: str
    backend: str
    encoder_dtype: str
    decoder_dtype: str
    key: str
    timings_ms: Dict[str, float] = field(default_factory=dict)   # accepted: encoder + 1 point
    rejected: Dict[str, str] = field(default_factory=dict)       # name -> reason
    from_cache: bool = False

    def reason(self) -> str:
        times = ", ".join(f"{n} {t:.1f} ms" for n, t in sorted(self.timings_ms.items(), key=lambda kv: kv[1]))
        rej = "; ".join(f"{n}: {r}" for n, r in self.rejected.items()) or "none"
        src = "cached choice" if self.from_cache else "measured now"
        return (f"backend auto -> {self.backend} {self.encoder_dtype} ({src}; encoder + 1-point decode: {times}; "
                f"rejected: {rej}) [{self.key}]")


def default_candidates(device: str = "cpu", decoder_dtype: str = "fp32", try_compile: bool = False) -> List[Candidate]:
    """The backends and precisions worth trying on this machine."""
    cands = [Candidate("torch-fp32", "torch", "fp32", decoder_dtype)]
    if device.startswith("cuda"):
        cands.append(Candidate("torch-fp16", "torch", "fp16", decoder_dtype, BF16))
        cands.append(Candidate("torch-bf16", "torch", "bf16", decoder_dtype, BF16))
    elif cpu_info().has_bf16:
        cands.append(Candidate("torch-bf16", "torch", "bf16", decoder_dtype, BF16))
    if try_compile:
        cands.append(Candidate("compile-fp32", "compile", "fp32", decoder_dtype))
        if device.startswith("cuda"):
            cands.append(Candidate("compile-fp16", "compile", "fp16", decoder_dtype, BF16))
        elif cpu_info().has_bf16:
            cands.append(Candidate("compile-bf16", "compile", "bf16", decoder_dtype, BF16))
    if not device.startswith("cuda") or decoder_dtype == "fp32":
        cands.append(Candidate("onnxruntime-fp32", "onnxruntime", "fp32", "fp32"))
    return cands


def choice_key(model, device: str, probe_size: Tuple[int, int] = PROBE_SIZE) -> str:
    from . import weights_hash

    info = cpu_info()
    dev = device if not device.startswith("cuda") else f"{device}:{torch.cuda.get_device_name(torch.device(device))}"
    return (f"{info.model} [{' '.join(info.flags)}] | torch {torch.__version__} | weights {weights_hash(model)} | "
            f"input {model.img_size} | frame {probe_size[0]}x{probe_size[1]} | {dev}")


def cache_path(cache_dir: str = "") -> str:
    from . import default_cache_dir

    return os.path.join(default_cache_dir(cache_dir), CACHE_FILE)


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: str, key: str, choice: AutoChoice) -> None:
    data = _read_cache(path)
    data[key] = {"name": choice.name, "backend": choice.backend, "encoder_dtype": choice.encoder_dtype,
                 "decoder_dtype": choice.decoder_dtype, "timings_ms": choice.timings_ms, "rejected": choice.rejected,
                 "cpu": cpu_info().describe(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def probe_image(h: int, w: int) -> np.ndarray:
    """A deterministic H x W x 3 uint8 frame with edges and regions (gradients, boxes, a disc)."""
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1), 96 + 0 * xx], axis=-1)
    for _ in range(5):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
    img[(yy - h * 0.55) ** 2 + (xx - w * 0.45) ** 2 < (min(h, w) * 0.18) ** 2] = (240, 40, 70)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _prompts(h: int, w: int) -> List[dict]:
    return [dict(point_coords=np.array([[w * 0.45, h * 0.55]]), point_labels=np.array([1]), multimask_output=True),
            dict(box=np.array([w * 0.1, h * 0.15, w * 0.7, h * 0.85]), multimask_output=False)]


def _outputs(p: SamPredictor, image: np.ndarray):
    emb = p.encode(image)
    h, w = image.shape[:2]
    decs = [p.decode(emb, return_logits=True, **kw) for kw in _prompts(h, w)]
    kw = _prompts(h, w)[0]
    first = decs[0]
    decs.append(p.decode(emb, kw["point_coords"], kw["point_labels"], mask_input=first.low_res_logits[:1],
                         multimask_output=False, return_logits=True))
    return emb.features.float(), decs


def parity_error(ref, got, tol: Tolerance) -> Optional[str]:
    """None when `got` (embedding, decodes) agrees with `ref` within tol, else what differs."""
    (e_ref, d_ref), (e_got, d_got) = ref, got
    if e_got.shape != e_ref.shape:
        return f"embedding shape {tuple(e_got.shape)} != {tuple(e_ref.shape)}"
    scale = float(e_ref.abs().max()) or 1.0
    err = float((e_got - e_ref).abs().max()) / scale
    if not err <= tol.embedding:
        return f"embedding differs by {err:.2g} of its range (allowed {tol.embedding:g})"
    for i, (a, b) in enumerate(zip(d_ref, d_got)):
        if a.masks.shape != b.masks.shape:
            return f"prompt {i}: masks shape {b.masks.shape} != {a.masks.shape}"
        lerr = float(np.abs(a.masks - b.masks).max()) / max(1.0, float(np.abs(a.masks).max()))
        if not lerr <= tol.logits:
            return f"prompt {i}: mask logits differ by {lerr:.2g} (allowed {tol.logits:g})"
        ierr = float(np.abs(a.iou_predictions - b.iou_predictions).max())
        if not ierr <= tol.iou:
            return f"prompt {i}: IoU predictions differ by {ierr:.2g} (allowed {tol.iou:g})"
        agree = float(((a.masks > 0) == (b.masks > 0)).mean())
        if not agree >= tol.mask_agreement:
            return f"prompt {i}: {agree:.2%} of mask pixels agree (required {tol.mask_agreement:.1%})"
    return None


def _build(c: Candidate, model, device: str, cache_dir: str) -> SamPredictor:
    if c.build is not None:
        return c.build(copy.deepcopy(model))
    from . import make_predictor

    return make_predictor(copy.deepcopy(model), backend=c.backend, device=device, encoder_dtype=c.encoder_dtype,
                          decoder_dtype=c.decoder_dtype, cache_dir=cache_dir)


def choose_backend(model, device: str = "cpu", cache_dir: str = "", candidates: Optional[Sequence[Candidate]] = None,
                   decoder_dtype: str = "fp32", try_compile: bool = False, probe_size: Tuple[int, int] = PROBE_SIZE,
                   rounds: int = 5, use_cache: bool = True) -> Tuple[AutoChoice, Optional[SamPredictor]]:
    """Pick the backend for `model` here (module docstring). Returns the choice and, when it was
    measured now, the winner's predictor (built on a copy of the model; None from the cache)."""
    model = model.float().eval()
    key = choice_key(model, device, probe_size)
    path = cache_path(cache_dir)
    cands = list(candidates) if candidates is not None else default_candidates(device, decoder_dtype, try_compile)
    by_name = {c.name: c for c in cands}
    cached = _read_cache(path).get(key) if use_cache else None
    if cached and cached.get("name") in by_name:
        choice = AutoChoice(cached["name"], cached["backend"], cached["encoder_dtype"], cached["decoder_dtype"], key,
                            dict(cached.get("timings_ms", {})), dict(cached.get("rejected", {})), from_cache=True)
        log.info(choice.reason())
        return choice, None

    image = probe_image(*probe_size)
    reference = SamPredictor(copy.deepcopy(model), device=device)
    ref_out = _outputs(reference, image)
    del reference
    built: Dict[str, SamPredictor] = {}
    rejected: Dict[str, str] = {}
    for c in cands:
        try:
            p = _build(c, model, device, cache_dir)
            err = parity_error(ref_out, _outputs(p, image), c.tolerance)
        except Exception as e:  # noqa: BLE001 (a missing package, an export or compile failure: skip it)
            rejected[c.name] = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            continue
        if err is not None:
            rejected[c.name] = f"parity: {err}"
            continue
        built[c.name] = p
    if not built:
        raise RuntimeError(f"backend auto: no candidate passed its parity check here: {rejected}")
    timings = _time_interleaved(built, image, rounds)
    best = min(timings, key=timings.get)
    c = by_name[best]
    choice = AutoChoice(c.name, c.backend, c.encoder_dtype, c.decoder_dtype, key, timings, rejected)
    if use_cache:
        try:
            _write_cache(path, key, choice)
        except OSError as e:
            log.warning("backend auto: could not write %s (%s); the choice is measured again next start", path, e)
    log.info(choice.reason())
    winner = built.pop(best)
    return choice, winner


def _time_interleaved(predictors: Dict[str, SamPredictor], image: np.ndarray, rounds: int) -> Dict[str, float]:
    """Median encoder + one-point decoder time (ms) per predictor; the candidates take turns in
    each round so that a busy neighbour slows them alike."""
    h, w = image.shape[:2]
    pt, lb = np.array([[w * 0.5, h * 0.5]]), np.array([1])
    times: Dict[str, List[float]] = {n: [] for n in predictors}
    for p in predictors.values():  # warm-up (first-call allocations, oneDNN primitive caches)
        p.decode(p.encode(image), pt, lb)
    for _ in range(rounds):
        for name, p in predictors.items():
            t = time.perf_counter()
            p.decode(p.encode(image), pt, lb)
            times[name].append((time.perf_counter() - t) * 1e3)
    return {n: statistics.median(v) for n, v in times.items()}
