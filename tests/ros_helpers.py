"""Helpers for the ROS 2 tests: the node runs in its own process, the test process talks to it over
real DDS (Fast DDS with the project's large-data profile), each test session in its own domain."""
import os
import re
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.path.join(ROOT, "config", "fastdds_large_data.xml")


def ros_env(domain_id: int) -> Dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = PROFILE       # Fast DDS 3 (Kilted)
    if "FASTRTPS_DEFAULT_PROFILES_FILE" in env:          # Fast DDS 2 (Jazzy): scripts/env.sh sets it
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = PROFILE
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["PYTHONPATH"] = ROOT + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class NodeProcess:
    """`python -m sam_ros.ros.node` (or another node module) in a subprocess, with its log captured."""

    def __init__(self, domain_id: int, params: Optional[Dict[str, object]] = None, name: str = "sam_ros",
                 remaps: Optional[Dict[str, str]] = None, module: str = "sam_ros.ros.node") -> None:
        cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        for k, v in (params or {}).items():
            v = str(v).lower() if isinstance(v, bool) else v
            cmd += ["-p", f"{k}:={v}"]
        for k, v in (remaps or {}).items():
            cmd += ["-r", f"{k}:={v}"]
        self.proc = subprocess.Popen(cmd, env=ros_env(domain_id), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, cwd=ROOT)
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.log):
                return True
            if self.proc.poll() is not None:
                return bool(re.search(pattern, self.log))
            time.sleep(0.1)
        return False

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spin_until(executor, predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return predicate()
