"""Start a `python -m <module>` process with its output captured (the node in tests and
benchmarks, the live console in the demo):

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


class ModuleProcess:
    """`python -m module args...` in a subprocess; its stdout and stderr lines in `lines`."""

    def __init__(self, module: str, args: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=dict(env if env is not None else os.environ),
                                     cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> Optional["re.Match"]:
        """The first match of pattern in the output, waiting up to timeout (None if the process
        ended or the time ran out without it)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(pattern, self.log)
            if m or self.proc.poll() is not None:
                return m or re.search(pattern, self.log)
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LiveConsoleProcess(ModuleProcess):
    """`python -m sam_ros.tools.console live` (extra console options in `args`, ROS arguments
    after `--ros-args` there too)."""

    def __init__(self, env: Optional[Dict[str, str]] = None, port: int = 0, host: str = "127.0.0.1",
                 args: Sequence[str] = (), cwd: Optional[str] = None) -> None:
        super().__init__("sam_ros.tools.console", ["--host", host, "--port", str(port), "live", *args], env, cwd)

    def url(self, timeout: float = 60.0) -> str:
        """The page's address, once the console listens (RuntimeError if it stopped or timed out)."""
        m = self.wait_for_log(r" at (http://\S+)", timeout)
        if not m:
            raise RuntimeError(f"the console did not start:\n{self.log}")
        return m.group(1)
