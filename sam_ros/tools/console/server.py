"""The console's HTTP server (standard library only): the page, its state and its frames.

    GET  /                    the page (static/index.html; ?token=... sets the session cookie)
    GET  /static/<file>       the page's script and style (a fixed list: nothing else is served)
    GET  /api/state?after=v   the session state as JSON, once its version is newer than v
    GET  /api/frame?after=n   the latest rendered frame (JPEG, WebP or PNG), once newer than n
    POST /api/action          one JSON message from the page (validated by `protocol`)

Frames are long-polled: the page has at most one request waiting while it draws a frame, and always
gets the newest, so a slow browser gets fewer frames, never a growing queue. It listens on
127.0.0.1 unless told otherwise; any other address needs a token (header `X-Console-Token`,
the cookie, or `?token=`). Without a token, requests must name a loopback Host (DNS rebinding)
and a POST from another origin is refused. Errors go back to the page and into its error list;
nothing a browser sends ends the server.
"""
import hmac
import ipaddress
import json
import os
import secrets
import threading
import time
import traceback
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from . import protocol as P
from .view import FORMATS, encode

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css"}
COOKIE = "sam_ros_console_token"
POLL_S = 10.0
MINOR_STATE_S = 0.2   # a tracked target's scores reach the page's list at most 5 times a second
MINOR_RENDER_S = 0.1  # without camera frames, a tracked target's new mask is drawn after this


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Hub:
    """Between the session and the HTTP threads: one action at a time, a versioned state, the
    latest encoded frame (rendered on a thread of its own whenever the session changed)."""

    def __init__(self, session: Any, fmt: Optional[str] = None) -> None:
        self.session = session
        self.fmt = fmt or session.image_format
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown frame format {self.fmt!r} (one of {', '.join(FORMATS)})")
        self.action_lock = threading.Lock()
        self.cond = threading.Condition()
        self.version = 1
        self.errors: deque = deque(maxlen=20)
        self.error_count = 0
        self.frame: Tuple[int, bytes, str, str, float] = (0, b"", "", "", 0.0)  # seq, data, MIME, meta, time
        self._bumped = 0.0            # when the state version last moved
        self._minor_state = False     # a minor state change not yet announced
        self._minor_since = 0.0       # when a minor change first waited for a render (0: none)
        self._dirty = threading.Event()
        self._running = True
        session.on_change = self.changed
        self._renderer = threading.Thread(target=self._render_loop, daemon=True, name="render")
        self._renderer.start()
        self.changed()

    def changed(self, state: bool = True, minor: bool = False) -> None:
        """The session changed: render a frame, and (state) bump the version the page's state
        poll waits for. `minor` (a tracked target's new mask and scores, ~30 per second and
        target): the frame waits for the next camera frame (or MINOR_RENDER_S) and the version
        moves at most every MINOR_STATE_S, so the page does not rebuild its list 30 times a
        second and the console renders once per camera frame, not twice."""
        now = time.monotonic()
        if minor:
            self._minor_since = self._minor_since or now
        else:
            self._dirty.set()
        if not state:
            return
        if minor and now - self._bumped < MINOR_STATE_S:
            self._minor_state = True
            return
        self._bump(now)

    def _bump(self, now: float) -> None:
        with self.cond:
            self._bumped, self._minor_state = now, False
            self.version += 1
            self.cond.notify_all()

    def error(self, message: str) -> None:
        with self.cond:
            self.error_count += 1
            self.errors.append({"n": self.error_count, "time": time.time(), "message": message})
            self.version += 1
            self.cond.notify_all()

    def _render_loop(self) -> None:
        while self._running:
            woke = self._dirty.wait(MINOR_RENDER_S)
            now = time.monotonic()
            if self._minor_state and now - self._bumped >= MINOR_STATE_S:
                self._bump(now)
            if not woke and not (self._minor_since and now - self._minor_since >= MINOR_RENDER_S):
                continue
            self._dirty.clear()
            self._minor_since = 0.0
            try:
                rgb = self.session.render()
                if rgb is None:
                    continue
                data, mime = encode(rgb, self.fmt)
                meta = getattr(self.session, "render_meta", "")
            except Exception as e:  # keep rendering later frames
                self.error(f"rendering failed: {type(e).__name__}: {e}")
                continue
            with self.cond:
                self.frame = (self.frame[0] + 1, data, mime, meta, time.time())
                self.cond.notify_all()

    def act(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        with self.action_lock:
            return self.session.handle(msg)

    def state(self, after: int, timeout: float) -> Dict[str, Any]:
        with self.cond:
            self.cond.wait_for(lambda: self.version > after, timeout)
            version, errors = self.version, list(self.errors)
        with self.action_lock:
            st = self.session.state()
        st.update({"version": version, "errors": errors, "frame": self.frame[0]})
        return st

    def next_frame(self, after: int, timeout: float) -> Tuple[int, bytes, str, str, float]:
        with self.cond:
            self.cond.wait_for(lambda: self.frame[0] > after or not self._running, timeout)
            return self.frame

    def close(self) -> None:
        self._running = False
        with self.cond:
            self.cond.notify_all()


class ConsoleServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, hub: Hub, host: str = "127.0.0.1", port: int = 8765, token: str = "") -> None:
        if not is_loopback(host) and not token:
            raise ValueError(f"listening on {host} (not a loopback address) requires a token (--token)")
        self.hub = hub
        self.token = token
        super().__init__((host, port), Handler)
        self.port = self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/" + (f"?token={token}" if token else "")
        self.allowed_hosts = {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]", shown)}

    def start(self) -> "ConsoleServer":
        threading.Thread(target=self.serve_forever, daemon=True, name="http").start()
        return self

    def stop(self) -> None:
        self.hub.close()
        self.shutdown()
        self.server_close()


def new_token() -> str:
    return secrets.token_urlsafe(18)


class Handler(BaseHTTPRequestHandler):
    server: ConsoleServer
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle's algorithm on a keep-alive connection the
    # body waits for the browser's delayed ACK of the headers (~40 ms per frame, measured).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args) -> None:  # quiet: errors go to the page
        pass

    # ---- checks ---------------------------------------------------------------------------
    def _authorised(self, query: Dict[str, list]) -> bool:
        token = self.server.token
        if not token:
            return self.headers.get("Host", "") in self.server.allowed_hosts
        given = [self.headers.get("X-Console-Token", ""), query.get("token", [""])[0]]
        for part in self.headers.get("Cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == COOKIE:
                given.append(v)
        return any(g and hmac.compare_digest(g.encode(), token.encode()) for g in given)

    def _send(self, code: int, body: bytes, ctype: str, headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _fail(self, code: int, message: str) -> None:
        self.server.hub.error(message)
        self._json(code, {"ok": False, "error": message})

    # ---- requests -------------------------------------------------------------------------
    def do_GET(self) -> None:
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if not self._authorised(query):
                self._json(403, {"ok": False, "error": "forbidden: wrong or missing token, or not a local Host"})
                return
            hub = self.server.hub
            if url.path == "/":
                headers = {}
                if self.server.token:
                    headers["Set-Cookie"] = f"{COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
                with open(os.path.join(STATIC_DIR, "index.html"), "rb") as f:
                    self._send(200, f.read(), "text/html; charset=utf-8", headers)
            elif url.path.startswith("/static/") and url.path[len("/static/"):] in STATIC_FILES:
                name = url.path[len("/static/"):]
                with open(os.path.join(STATIC_DIR, name), "rb") as f:
                    self._send(200, f.read(), STATIC_FILES[name] + "; charset=utf-8")
            elif url.path == "/api/state":
                self._json(200, hub.state(self._after(query), POLL_S))
            elif url.path == "/api/frame":
                seq, data, mime, meta, rendered = hub.next_frame(self._after(query), POLL_S)
                if not data:
                    self._send(204, b"", "text/plain", {"X-Frame-Seq": str(seq)})
                else:  # X-Frame-Time: when it was rendered (Unix time, s), for latency measurements
                    self._send(200, data, mime, {"X-Frame-Seq": str(seq), "X-Frame-Meta": meta,
                                                 "X-Frame-Time": f"{rendered:.6f}"})
            else:
                self._json(404, {"ok": False, "error": "not found"})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:
            self._internal_error(e)

    @staticmethod
    def _after(query: Dict[str, list]) -> int:
        try:
            return int(query.get("after", ["0"])[0])
        except ValueError:
            return 0

    def do_POST(self) -> None:
        try:
            url = urlsplit(self.path)
            if not self._authorised(parse_qs(url.query)):
                self._json(403, {"ok": False, "error": "forbidden: wrong or missing token, or not a local Host"})
                return
            origin = self.headers.get("Origin")
            if origin and urlsplit(origin).netloc != self.headers.get("Host", ""):
                self._fail(403, f"request from another origin ({origin}) refused")
                return
            if url.path != "/api/action":
                self._json(404, {"ok": False, "error": "not found"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                self._fail(411, "a message needs a Content-Length")
                return
            if int(length) > P.MAX_MESSAGE_BYTES:
                self.close_connection = True  # the body is not read
                self._fail(413, f"message of {length} bytes is larger than the limit of {P.MAX_MESSAGE_BYTES}")
                return
            body = self.rfile.read(int(length))
            try:
                msg = P.parse_message(body)
                result = self.server.hub.act(msg)
            except (P.ProtocolError, KeyError) as e:
                text = str(e) if isinstance(e, P.ProtocolError) else f"no such object: {e}"
                self._fail(400, text)
                return
            except ValueError as e:  # engine input errors (InputError is a ValueError)
                self._fail(400, f"{type(e).__name__}: {e}")
                return
            self._json(200, {"ok": True, **result})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:
            self._internal_error(e)

    def _internal_error(self, e: Exception) -> None:
        traceback.print_exc()
        try:
            self._fail(500, f"internal error: {type(e).__name__}: {e}")
        except Exception:
            pass
