"""Start the live console as a process of its own (for the demo, benchmarks and tests):

    proc = LiveConsoleProcess(env=os.environ, port=0)
    print(proc.url())        # the address the console prints once it listens
    ...
    proc.stop()
"""
import os
import re
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence


class LiveConsoleProcess:
    """`python -m sam_ros.tools.console live` in a subprocess, its output captured."""

    def __init__(self, env: Optional[Dict[str, str]] = None, port: int = 0, host: str = "127.0.0.1",
                 args: Sequence[str] = (), cwd: Optional[str] = None) -> None:
        cmd = [sys.executable, "-m", "sam_ros.tools.console", "--host", host, "--port", str(port), "live", *args]
        self.proc = subprocess.Popen(cmd, env=dict(env if env is not None else os.environ), cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def url(self, timeout: float = 60.0) -> str:
        """The page's address, once the console listens (RuntimeError if it stopped or timed out)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(r" at (http://\S+)", self.log)
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the console did not start:\n{self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
