"""Serving urgent work (prompts) between the layers of a long forward pass on the thread that runs it."""
import time
from typing import Any, Callable, List


class LayerPreemption:
    """Serves urgent work (prompts) in the middle of a long forward pass (the image encoder) on
    the thread that runs it.

    On a CPU the node runs all model work on one thread: two threads calling torch at once
    split the cores, and each gets its own OpenMP pool, which (once pools hold more threads than
    there are cores) makes every pool stop spin-waiting, so every small operator pays a thread
    wake-up. Instead, `attach` puts a checkpoint before each parameter-owning layer of the
    encoder; at a checkpoint, if `pending()` says urgent work is queued, `serve()` runs right
    there, and the encoder continues where it was. A job (one frame) spends at most
    `max_pause_s` serving, so a prompt flood delays a frame but cannot starve the encoder.
    Checkpoints reached while `serve` runs do nothing (it may run hooked modules itself).
    """

    def __init__(self, pending: Callable[[], bool], serve: Callable[[], Any], max_pause_s: float = 0.25) -> None:
        self.pending = pending
        self.serve = serve
        self.max_pause_s = max_pause_s
        self._job_paused = 0.0
        self._serving = False
        self.pauses = 0          # checkpoints that served work (diagnostics, tests)
        self.paused_s = 0.0      # total time spent serving inside jobs

    def begin_job(self) -> None:
        """Start of a job (one frame): resets its budget."""
        self._job_paused = 0.0

    @property
    def job_paused_s(self) -> float:
        """Time the current (or last) job has spent serving urgent work."""
        return self._job_paused

    def checkpoint(self) -> None:
        if self._serving or self._job_paused >= self.max_pause_s or not self.pending():
            return
        self._serving = True
        t0 = time.perf_counter()
        try:
            self.serve()
        finally:
            self._serving = False
            spent = time.perf_counter() - t0
            self._job_paused += spent
            self.pauses += 1
            self.paused_s += spent

    def attach(self, module) -> List[Any]:
        """A checkpoint before every layer of a torch module that owns parameters (linear,
        convolution, normalisation layers); returns the hook handles (`handle.remove()`)."""
        def hook(_module, _args):
            self.checkpoint()

        return [m.register_forward_pre_hook(hook) for m in module.modules()
                if next(m.parameters(recurse=False), None) is not None]
