"""Validation of every message the browser sends: one JSON object per request, with an `action`
from a known set and typed, bounded fields. Anything else raises :class:`ProtocolError` with a
message for the page; nothing here touches the model, ROS or files."""
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

MAX_MESSAGE_BYTES = 256 * 1024
MAX_POINTS = 4096
MAX_TEXT = 200


class ProtocolError(ValueError):
    """A browser message that cannot be served, with a message that says why."""


def parse_message(body: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Dict[str, Any]:
    """Request body -> dict with a string `action` (NaN/Infinity literals are rejected)."""
    if len(body) > max_bytes:
        raise ProtocolError(f"message of {len(body)} bytes is larger than the limit of {max_bytes}")

    def no_constants(name: str) -> Any:
        raise ProtocolError(f"{name} is not a number the console accepts")

    try:
        msg = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except ProtocolError:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"malformed JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    action = msg.get("action")
    if not isinstance(action, str) or not action:
        raise ProtocolError("message has no 'action'")
    return msg


def number(msg: Dict[str, Any], key: str, lo: float = -math.inf, hi: float = math.inf,
           default: Optional[float] = None) -> float:
    """A finite number field within [lo, hi]."""
    if key not in msg and default is None:
        raise ProtocolError(f"'{key}' is missing")
    v = msg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ProtocolError(f"'{key}' must be a finite number, got {v!r}")
    if not lo <= v <= hi:
        raise ProtocolError(f"'{key}' = {v} is outside [{lo:g}, {hi:g}]")
    return float(v)


def integer(msg: Dict[str, Any], key: str, lo: int, hi: int, default: Optional[int] = None) -> int:
    v = msg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"'{key}' must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ProtocolError(f"'{key}' = {v} is outside [{lo}, {hi}]")
    return v


def text(msg: Dict[str, Any], key: str, default: Optional[str] = None, max_len: int = MAX_TEXT,
         choices: Optional[Sequence[str]] = None) -> str:
    v = msg.get(key, default)
    if not isinstance(v, str):
        raise ProtocolError(f"'{key}' must be a string, got {v!r}")
    if len(v) > max_len:
        raise ProtocolError(f"'{key}' is longer than {max_len} characters")
    if any(ord(c) < 32 for c in v):
        raise ProtocolError(f"'{key}' contains control characters")
    if choices is not None and v not in choices:
        raise ProtocolError(f"'{key}' must be one of {', '.join(choices)}, got {v!r}")
    return v


def point(msg: Dict[str, Any], size: Tuple[int, int], kx: str = "x", ky: str = "y") -> Tuple[float, float]:
    """(x, y) inside an image of size (H, W): 0 <= x <= W, 0 <= y <= H."""
    h, w = size
    return number(msg, kx, 0, w), number(msg, ky, 0, h)


def box(msg: Dict[str, Any], size: Tuple[int, int]) -> Tuple[float, float, float, float]:
    """x0, y0, x1, y1 inside the image, sorted, at least one pixel wide and high."""
    x0, y0 = point(msg, size, "x0", "y0")
    x1, y1 = point(msg, size, "x1", "y1")
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ProtocolError("box is smaller than one pixel")
    return x0, y0, x1, y1


def polyline(msg: Dict[str, Any], size: Tuple[int, int], key: str = "points") -> List[Tuple[float, float]]:
    """A non-empty list of [x, y] pairs inside the image."""
    pts = msg.get(key)
    if not isinstance(pts, list) or not pts:
        raise ProtocolError(f"'{key}' must be a non-empty list of [x, y]")
    if len(pts) > MAX_POINTS:
        raise ProtocolError(f"'{key}' has {len(pts)} points, at most {MAX_POINTS} are accepted")
    out = []
    for i, p in enumerate(pts):
        if not isinstance(p, list) or len(p) != 2:
            raise ProtocolError(f"'{key}'[{i}] must be [x, y]")
        out.append(point({"x": p[0], "y": p[1]}, size))
    return out


def require_image(size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    if size is None:
        raise ProtocolError("no image yet: wait for the camera (or open an image)")
    return size
