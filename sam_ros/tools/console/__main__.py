"""python -m sam_ros.tools.console {live,annotate,review} ... (see sam_ros/tools/console/__init__.py)"""
import argparse
import signal
import sys
import threading

from . import __doc__ as DOC
from .server import ConsoleServer, Hub, is_loopback, new_token


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sam_ros.tools.console", description=DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (not loopback: needs --token)")
    ap.add_argument("--port", type=int, default=8765, help="0 = any free port")
    ap.add_argument("--token", default="", help="required for a non-loopback --host; 'auto' makes one")
    ap.add_argument("--format", default="", choices=["", "jpeg", "webp", "png"], help="frame encoding for the page")
    sub = ap.add_subparsers(dest="mode", required=True)
    live = sub.add_parser("live", help="targets on a live camera, beside the sam_ros node (ROS 2)")
    live.add_argument("--image-topic", default="image")
    live.add_argument("--compressed", action="store_true", help="subscribe <image-topic>/compressed")
    for name, help_ in (("annotate", "segment images with clicks, brush and eraser; SA-1B output"),
                        ("review", "accept / reject / edit a data-engine output folder")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("input", help="folder of images, video or ROS 2 bag" if name == "annotate" else "dataset folder")
        if name == "annotate":
            p.add_argument("--out", required=True, help="output folder (SA-1B layout; re-open to continue)")
            p.add_argument("--rate", type=float, default=1.0, help="frames per second taken from a video or bag")
            p.add_argument("--topic", default="", help="image topic of a bag")
            p.add_argument("--limit", type=int, default=0, help="at most this many frames of a video or bag")
        p.add_argument("--checkpoint", default="", help="SAM checkpoint (default: the embedded model)")
        p.add_argument("--variant", default="")
        p.add_argument("--device", default="cpu")
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ros_args = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    a = build_parser().parse_args(argv)
    token = new_token() if a.token == "auto" else a.token
    if not is_loopback(a.host) and not token:
        print(f"console: listening on {a.host} (not a loopback address) requires a token (--token)", file=sys.stderr)
        return 2
    stop_ros = None
    if a.mode == "live":
        from .live import LiveSession
        try:
            import rclpy  # noqa: F401  (live mode is the one console mode that needs ROS 2)
        except ImportError as e:
            print(f"console live needs ROS 2's rclpy, which this Python cannot import ({e}): source a ROS 2 "
                  "setup.bash or use the venv of scripts/env.sh.", file=sys.stderr)
            return 2
        from .live_ros import start

        session = LiveSession()
        _, stop_ros = start(session, ["console"] + ros_args, a.image_topic, a.compressed)
    else:
        from ...engine.factory import create_predictor
        from .workbench import Workbench

        predictor = create_predictor(a.checkpoint, a.variant, a.device)
        try:
            if a.mode == "annotate":
                session = Workbench(predictor, a.input, a.out, rate=a.rate, topic=a.topic, limit=a.limit)
            else:
                session = Workbench(predictor, a.input, a.input, review=True)
        except ValueError as e:
            print(f"console: {e}", file=sys.stderr)
            return 2
    try:
        server = ConsoleServer(Hub(session, a.format or None), a.host, a.port, token).start()
    except (ValueError, OSError) as e:
        print(f"console: {e}", file=sys.stderr)
        if stop_ros:
            stop_ros()
        return 2
    print(f"sam_ros console ({a.mode}) at {server.url}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()
    if stop_ros:
        stop_ros()
    return 0


if __name__ == "__main__":
    sys.exit(main())
