"""The data engine on a Ray cluster: `python -m sam_ros.tools.data_engine INPUT --out DIR --ray [ADDRESS]`.

The driver (this process) reads the input as the local run does (folder, video or bag; a corrupt
item is logged and skipped), hands each image to one of N `Labeler` actors, and writes what comes
back. An actor loads the model once and keeps it; with --device cuda each one reserves a GPU
(--worker-gpus), so a cluster gets one model per GPU. The actors compute exactly what the local
loop computes (`data_engine.label_image`: the JPEG and the JSON, as bytes), so the dataset is the
same file for file; summary.json lists the images in input order whatever order they finish in.
A folder's image files travel as their bytes and are decoded by the actors (decoding a large JPEG
costs more than reading it); video and bag frames are decoded by the driver, in order.

Fault tolerance: every image stays with the driver (in the object store) until its files are
written. When an actor dies (node lost, process killed, out of memory), its unfinished images go
back to the front of the queue and a fresh actor takes its slot (at most --max-restarts times per
slot); an image whose worker died under it three times is logged and skipped. Nothing is written
twice: only the driver writes, once per image, atomically (tmp file + rename), so a re-run after
the driver itself stopped resumes where it was, as the local run does.

Scale: one driver reads the input and writes the output; when it, not the actors, is the
bottleneck (benchmarks/README.md has its per-image costs), split the footage into several INPUTs
(e.g. one per bag) with a driver each. The input and --out paths are the driver's; the actors need
sam_ros installed (`pip install 'sam_ros[ray]'`) and the checkpoint at the same path.
"""
import argparse
import collections
import os
import sys
import time
from typing import Deque, Dict, List, Optional, Tuple

MISSING_RAY = "--ray needs Ray, which is not installed: pip install 'sam_ros[ray]' (or ray==2.60.0)."
IN_FLIGHT_PER_ACTOR = 2  # one image running, one waiting: an actor never idles between images
MAX_ATTEMPTS = 3         # an image whose worker died under it this often is skipped


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class Labeler:
    """A Ray actor holding the model: images in, output files (as bytes) out."""

    def __init__(self, a: argparse.Namespace, detections: Dict[str, List[List[float]]]):
        import torch

        from ..engine.factory import create_predictor
        from .data_engine import make_generator

        torch.set_num_threads(a.threads or max(1, int(a.worker_cpus)))
        self.a = a
        self.detections = detections
        self.predictor = create_predictor(a.checkpoint, a.variant, a.device, a.dtype)
        self.generator = make_generator(self.predictor, a)

    def where(self) -> Dict[str, object]:
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(), "device": self.a.device}

    def label(self, frame) -> Tuple[Optional[bytes], bytes]:
        """A Frame (with its image, or with its file's bytes to decode here) -> (JPEG, JSON), or
        (None, the error) when the file is no image."""
        from ..data.sources import decode_frame
        from .data_engine import label_image

        if frame.image is None:
            frame = decode_frame(frame)
            if frame.image is None:
                return None, frame.error.encode()
        return label_image(frame.name, frame.image, self.predictor, self.generator,
                           self.detections.get(frame.name, []), self.a.overlap)


def _line(err: Exception, last: bool = False) -> str:
    """One line of a Ray error: the first says what happened to the actor, the last (of an
    actor whose __init__ raised) what its exception was."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[-1] if last else lines[0]) if lines else type(err).__name__


class _Slot:
    """One worker place: its current actor, how often it was replaced, and the images it holds."""

    def __init__(self, index: int):
        self.index = index
        self.actor = None
        self.generation = 0
        self.inflight: Dict[object, "_Item"] = {}


class _Item:
    def __init__(self, seq: int, name: str, frame_ref):
        self.seq, self.name, self.frame_ref, self.attempts = seq, name, frame_ref, 0


def connect(address: str):
    """Join the cluster at ADDRESS, or start a local Ray ('local'); reuse one this process already has.
    Returns (the ray module, whether this call started the connection)."""
    import ray

    from .data_engine import EngineError

    if ray.is_initialized():
        return ray, False
    try:
        if address == "local":
            ray.init(namespace="sam_ros", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, namespace="sam_ros", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EngineError(f"cannot start or reach Ray at {address!r}: {_line(e)}") from None
    return ray, True


def default_workers(ray, a: argparse.Namespace) -> int:
    res = ray.cluster_resources()
    if a.device.startswith("cuda"):
        return max(1, int(res.get("GPU", 0) // max(a.worker_gpus, 1e-6)))
    return max(1, int(res.get("CPU", 1) // max(a.worker_cpus, 1e-6)))


def run_on_ray(a: argparse.Namespace, writer, frames) -> Tuple[int, Dict[str, object]]:
    """Label `frames` (a tqdm over the input's frames) on Ray actors and write them with `writer`
    (a data_engine.DatasetWriter). Returns (new images, extra figures for the final report line)."""
    ray, connected_here = connect(a.ray)
    try:
        return _label_all(ray, a, writer, frames)
    finally:
        if connected_here:
            ray.shutdown()


def _label_all(ray, a: argparse.Namespace, writer, frames) -> Tuple[int, Dict[str, object]]:
    from .data_engine import EngineError, load_detections_json

    detections = load_detections_json(a.detections) if a.detections else {}
    gpus = a.worker_gpus if a.device.startswith("cuda") else 0
    remote_cls = ray.remote(num_cpus=a.worker_cpus, num_gpus=gpus, max_restarts=0)(Labeler)
    settings_ref, dets_ref = ray.put(a), ray.put(detections)
    if gpus and not ray.cluster_resources().get("GPU"):
        raise EngineError("--device cuda, but the Ray cluster has no GPUs")
    n_workers = a.workers or default_workers(ray, a)
    slots = [_Slot(i) for i in range(n_workers)]
    t0 = time.time()

    def start(slot: _Slot) -> None:
        slot.generation += 1
        slot.actor = remote_cls.remote(settings_ref, dets_ref)

    for slot in slots:
        start(slot)
    print(f"data engine on Ray: {n_workers} workers ({a.device}, {a.worker_cpus:g} CPU"
          + (f", {gpus:g} GPU" if gpus else "") + " each)", file=sys.stderr)
    try:  # the model loads in every actor; a load error (e.g. a missing checkpoint) stops here
        for slot, info in zip(slots, ray.get([s.actor.where.remote() for s in slots])):
            print(f"worker {slot.index}: pid {info['pid']} on {info['host']}", file=sys.stderr, flush=True)
    except ray.exceptions.RayActorError as e:
        raise EngineError(f"a Ray worker could not load the model: {_line(e, last=True)}") from None
    startup = round(time.time() - t0, 2)

    source = iter(frames.iterable)  # the bar counts finished images, not images read
    retry: Deque[_Item] = collections.deque()
    ready: Dict[int, Tuple[str, str, object]] = {}  # seq -> finished, waiting for its turn in the summary
    next_seq, seq = 0, 0
    new = submitted = retried = restarts = 0
    exhausted = False
    last_save = time.time()

    def finish(seq_: int, kind: str, name: str, value) -> None:
        """Record an item's outcome in input order (summary.json then lists images as the local run)."""
        nonlocal next_seq
        ready[seq_] = (kind, name, value)
        while next_seq in ready:
            kind_, name_, value_ = ready.pop(next_seq)
            if kind_ == "image":
                writer.add(name_, value_)
            elif kind_ == "skip":
                writer.skip(name_, value_)
            next_seq += 1
            frames.update(1)

    def next_item() -> Optional[_Item]:
        nonlocal exhausted, seq, submitted
        if retry:
            return retry.popleft()
        while not exhausted and not (a.limit and submitted >= a.limit):
            try:
                frame = next(source)
            except StopIteration:
                break
            s, seq = seq, seq + 1
            if writer.is_done(frame.name):
                finish(s, "done", frame.name, None)
            elif frame.image is None and frame.data is None:
                finish(s, "skip", frame.name, frame.error)
            else:  # an image, or an image file's bytes that the actor decodes
                submitted += 1
                return _Item(s, frame.name, ray.put(frame))
        exhausted = True
        return None

    def fill() -> None:
        for slot in slots:
            while len(slot.inflight) < IN_FLIGHT_PER_ACTOR:
                item = next_item()
                if item is None:
                    return
                item.attempts += 1
                slot.inflight[slot.actor.label.remote(item.frame_ref)] = item

    def lost(slot: _Slot, err: Exception) -> None:
        """The slot's actor died: its images go back to the queue; the slot gets a new actor."""
        nonlocal retried, restarts
        items = sorted(slot.inflight.values(), key=lambda it: it.seq)
        slot.inflight.clear()
        print(f"worker {slot.index} died ({_line(err)}); redoing its {len(items)} unfinished images",
              file=sys.stderr, flush=True)
        for item in reversed(items):
            if item.attempts >= MAX_ATTEMPTS:
                finish(item.seq, "skip", item.name, f"its worker died {item.attempts} times while labelling it")
            else:
                retry.appendleft(item)
                retried += 1
        try:
            ray.kill(slot.actor)
        except Exception:  # already gone
            pass
        if slot.generation <= a.max_restarts:
            restarts += 1
            start(slot)
        else:
            slots.remove(slot)

    fill()
    while any(s.inflight for s in slots):
        refs = [r for s in slots for r in s.inflight]
        done, _ = ray.wait(refs, num_returns=1)
        ref = done[0]
        slot = next(s for s in slots if ref in s.inflight)
        try:
            jpg, record_json = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # labelling raised: log the image and go on
            item = slot.inflight.pop(ref)
            finish(item.seq, "skip", item.name, f"labelling failed: {e.cause!r}")
            fill()
            continue
        except ray.exceptions.RayError as e:  # the actor (or its node) is gone
            lost(slot, e)
            if not slots:
                raise EngineError(f"all Ray workers died (each slot replaced {a.max_restarts} times); "
                                   "re-run to resume") from None
            fill()
            continue
        item = slot.inflight.pop(ref)
        if jpg is None:  # the actor found the file's bytes to be no image
            finish(item.seq, "skip", item.name, record_json.decode())
            submitted -= 1  # --limit counts images, as in the local run
            fill()
            continue
        entry = writer.write_image(item.name, jpg, record_json)
        new += 1
        finish(item.seq, "image", item.name, entry)
        frames.set_postfix(masks=entry["masks"], workers=len(slots), redone=retried)
        if time.time() - last_save > 1.0:
            writer.save()
            last_save = time.time()
        fill()
    for slot in slots:
        ray.kill(slot.actor)
    return new, {"startup_seconds": startup, "workers": n_workers, "redone": retried, "worker_restarts": restarts}
