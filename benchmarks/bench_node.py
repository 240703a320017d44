"""End-to-end through DDS: the node, a camera (640x480 unless --size) and this client, each in its own process.

Measures (embedded default model, CPU):
- frames in vs results out per second with one tracked target, camera at --rate Hz (the camera
  is a process of its own, as a camera driver is);
- prompt-to-result latency (median, p95) for a click on a cached frame, with the camera stopped
  (idle encoder) and while the camera streams (busy encoder), clicks --gap-ms after the previous
  result, next to the bare decoder time (same model, frame and clicks, in a quiet process of its
  own, called with the same gap and back to back);
- the node's own overhead: end-to-end latency minus the model time it reports.

    python benchmarks/bench_node.py [--rate 15] [--seconds 20] [--prompts 100] [--gap-ms 50]
                                    [--prompt-priority 0] [--size 720x1280]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import print_machine  # noqa: E402


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def bare_decoder(count, tuned, gap_ms, size=(480, 640)):
    """The bare decoder: the same model, frame and clicks as the node gets, called from Python
    (prompt encoder + mask decoder + postprocess to the frame's size, multimask) with `gap_ms` between calls
    (0: back to back), with or without the allocator setting the node uses (keep_freed_memory).
    Milliseconds."""
    from sam_ros.data.scenes import SceneSequence
    from sam_ros.engine.factory import create_predictor
    from sam_ros.engine.runtime import keep_freed_memory

    if tuned:
        keep_freed_memory()
    predictor = create_predictor()
    emb = predictor.encode(SceneSequence(5, height=size[0], width=size[1]).frame(0).image)
    times = []
    for k in range(-10, count):
        t = time.perf_counter()
        predictor.decode(emb, np.array([[(100 + 4 * k % 440) * size[1] / 640, (120 + 3 * k % 240) * size[0] / 480]], float),
                         np.array([1]))
        if k >= 0:
            times.append((time.perf_counter() - t) * 1000)
        if gap_ms:
            time.sleep(gap_ms / 1000)
    return times


def camera(rate, domain, size=(480, 640)):
    """The camera: its own process (like a camera driver), pre-rendered frames of `size` at `rate`
    Hz with sensor-data QoS. Each frame's stamp is CLOCK_MONOTONIC at publication (one host), so the
    client measures frame-to-result latency from the header. On SIGTERM prints the number of frames
    and the seconds between the first and the last."""
    import signal

    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from sam_ros.data.scenes import SceneSequence
    from sam_ros.ros.conversions import fill_image_msg

    rclpy.init(domain_id=domain)
    node = rclpy.create_node("bench_camera")
    pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    seq = SceneSequence(5, height=size[0], width=size[1])
    msgs = [fill_image_msg(Image(), seq.frame(t).image, "rgb8") for t in range(30)]
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    while running[0] and pub.get_subscription_count() == 0:  # frames before discovery are lost
        time.sleep(0.01)
    count, next_t = 0, time.monotonic()
    first = last = next_t
    while running[0]:
        now = time.monotonic()
        if now < next_t:
            time.sleep(next_t - now)
            continue
        msg = msgs[count % len(msgs)]
        t = time.monotonic_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = t // 1_000_000_000, t % 1_000_000_000
        msg.header.frame_id = "camera"
        pub.publish(msg)
        first, last = (t * 1e-9 if count == 0 else first), t * 1e-9
        count += 1
        next_t += 1.0 / rate
    print(count, last - first, flush=True)
    node.destroy_node()
    rclpy.shutdown()


class CameraProcess:
    def __init__(self, rate, domain, size=(480, 640)):
        from ros_helpers import ros_env

        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--camera", str(rate),
                                      "--domain", str(domain), "--size", f"{size[0]}x{size[1]}"], env=ros_env(domain), stdout=subprocess.PIPE,
                                     text=True)

    def stop(self):
        """Stops the camera; returns (frames published, seconds from the first to the last)."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=20)
        count, seconds = out.strip().splitlines()[-1].split()
        return int(count), float(seconds)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--prompt-priority", type=int, default=1, choices=(0, 1),
                    help="the node's prompt_priority parameter (encoder pauses while prompts decode)")
    ap.add_argument("--gap-ms", type=float, default=50.0,
                    help="pause between a result and the next prompt (a detector at 20 Hz, a fast operator)")
    ap.add_argument("--json")
    ap.add_argument("--size", default="480x640", help="camera frames, HxW")
    ap.add_argument("--bare", type=int, choices=(0, 1), help=argparse.SUPPRESS)  # internal: the bare decoder
    ap.add_argument("--camera", type=float, help=argparse.SUPPRESS)  # internal: the camera process
    ap.add_argument("--domain", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    if a.bare is not None:
        print(json.dumps(bare_decoder(a.prompts, bool(a.bare), a.gap_ms, size)))
        return 0
    if a.camera is not None:
        camera(a.camera, a.domain, size)
        return 0
    print_machine()
    # The bare decoder first, each variant in its own quiet process (nothing else running on the
    # 2 cores): paced like the node's prompts (gap_ms between calls) and back to back, each with
    # glibc's default allocator and with the node's setting; the ratios use the faster allocator.
    def run_bare(tuned, gap_ms):
        cmd = [sys.executable, os.path.abspath(__file__), "--bare", str(tuned), "--prompts", str(a.prompts),
               "--gap-ms", str(gap_ms), "--size", a.size]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])

    bare_runs = {(tuned, gap): run_bare(tuned, gap) for gap in (a.gap_ms, 0.0) for tuned in (0, 1)}
    bare_paced = min((bare_runs[(t, a.gap_ms)] for t in (0, 1)), key=lambda v: pct(v, 50))
    bare_b2b = min((bare_runs[(t, 0.0)] for t in (0, 1)), key=lambda v: pct(v, 50))

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Point
    from rclpy.executors import SingleThreadedExecutor

    from ros_helpers import NodeProcess
    from sam_ros.msg import Prompt, SegmentationResult
    from sam_ros.ros.conversions import stamp_key

    domain = 90 + os.getpid() % 100
    node = NodeProcess(domain, params={"cache_size": 8, "publish_overlay": False,
                                      "prompt_priority": bool(a.prompt_priority)})
    assert node.wait_for_log("listening on", 120), node.log
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    n = rclpy.create_node("bench", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)
    received = []  # (arrival time, message): stamped in the callback
    n.create_subscription(SegmentationResult, "segmentation", lambda m: received.append((time.monotonic(), m)), 100)
    diag = {}  # the node's latest diagnostics values

    def on_diag(msg):
        for st in msg.status:
            diag.update({kv.key: kv.value for kv in st.values})

    n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    prompt_pub = n.create_publisher(Prompt, "prompt", 100)
    click_pub = n.create_publisher(Point, "image_mouse_left", 10)
    end = time.monotonic() + 30
    while time.monotonic() < end and prompt_pub.get_subscription_count() == 0:
        ex.spin_once(timeout_sec=0.05)

    def spin_for(seconds):
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            ex.spin_once(timeout_sec=max(0.0, min(0.05, t_end - time.monotonic())))

    def tracked(msgs):
        return [(t, m) for t, m in msgs if m.objects and m.objects[0].target_id]

    # Warm up and start a tracked target with a click.
    cam = CameraProcess(a.rate, domain, size)
    spin_for(3.0)
    click_pub.publish(Point(x=size[1] / 2, y=size[0] / 2, z=0.0))
    spin_for(2.0)
    cam.stop()
    spin_for(1.0)

    # 1) Streaming: frames in vs results out, with the target tracked.
    received.clear()
    spin_for(1.5)  # the diagnostics before
    before = {k: int(diag.get(k, 0)) for k in ("frames_received", "frames_encoded", "frames_dropped")}
    cam = CameraProcess(a.rate, domain, size)
    spin_for(a.seconds)
    frames, elapsed = cam.stop()
    spin_for(1.5)
    node_counts = {k: int(diag.get(k, 0)) - v for k, v in before.items()}
    stream_results = tracked(received)
    e2e = [(t - stamp_key(m.header.stamp) * 1e-9) * 1000 for t, m in stream_results]
    model_ms = [m.encoder_ms + m.decoder_ms for _, m in stream_results]
    overhead = [e - mm for e, mm in zip(e2e, model_ms)]
    stream = {"frames_published": frames, **{f"node_{k}": v for k, v in node_counts.items()},
              "camera_fps": (frames - 1) / elapsed, "results_fps": len(stream_results) / elapsed,
              "frame_to_result_ms_median": pct(e2e, 50), "frame_to_result_ms_p95": pct(e2e, 95),
              "encoder_ms_median": pct([m.encoder_ms for _, m in stream_results], 50),
              "overhead_ms_median (end-to-end minus encoder+decoder, includes waiting for the encoder)": pct(overhead, 50)}

    def prompt_round(count):
        # A click on a frame the node has encoded (the newest result's frame, as an operator
        # clicks on the image they see). Like a real client, this process blocks in its executor
        # until a message arrives instead of polling (a polling client takes a core from the node).
        lat, dec, inside = [], [], []
        for k in range(count):
            header = tracked(received)[-1][1].header
            p = Prompt(header=header, target_id="", multimask=True)
            p.points = [Point(x=float(100 + 4 * k % 440) * size[1] / 640, y=float(120 + 3 * k % 240) * size[0] / 480, z=0.0)]
            p.labels = [1]
            before = len(received)
            t0 = time.monotonic()
            prompt_pub.publish(p)
            while time.monotonic() - t0 < 5:
                ex.spin_once(timeout_sec=0.1)
                got = [(t, m) for t, m in received[before:] if m.objects and not m.objects[0].target_id]
                if got:
                    lat.append((got[0][0] - t0) * 1000)
                    dec.append(got[0][1].decoder_ms)
                    inside.append(got[0][1].latency_ms)
                    break
            spin_for(a.gap_ms / 1000)
        return lat, dec, inside

    # 2) Prompts on a cached frame, idle encoder (camera stopped).
    lat_idle, dec_idle, in_idle = prompt_round(a.prompts)
    # 3) Prompts while the camera streams (busy encoder).
    cam = CameraProcess(a.rate, domain, size)
    spin_for(1.0)
    lat_busy, dec_busy, in_busy = prompt_round(a.prompts // 2)
    cam.stop()

    prompts = {"prompt_gap_ms": a.gap_ms,
               "bare_decoder_ms_median_paced": pct(bare_paced, 50),
               "bare_decoder_ms_median_back_to_back": pct(bare_b2b, 50),
               **{f"bare_decoder_ms_median_{'paced' if gap else 'back_to_back'}_{'keep_freed_memory' if t else 'default_malloc'}":
                  pct(v, 50) for (t, gap), v in bare_runs.items()},
               "prompt_latency_ms_median_idle": pct(lat_idle, 50), "prompt_latency_ms_p95_idle": pct(lat_idle, 95),
               "prompt_latency_ms_median_busy": pct(lat_busy, 50), "prompt_latency_ms_p95_busy": pct(lat_busy, 95),
               "node_decoder_ms_median_idle": pct(dec_idle, 50), "node_decoder_ms_median_busy": pct(dec_busy, 50),
               "node_internal_ms_median_idle (prompt callback to result published)": pct(in_idle, 50),
               "node_internal_ms_median_busy": pct(in_busy, 50),
               "overhead_ms_median_idle (latency minus the node's decoder time)":
                   pct([x - d for x, d in zip(lat_idle, dec_idle)], 50),
               "overhead_ms_median_busy": pct([x - d for x, d in zip(lat_busy, dec_busy)], 50)}
    for mode, lat in (("idle", lat_idle), ("busy", lat_busy)):
        prompts[f"ratio_{mode}_to_bare_paced"] = pct(lat, 50) / pct(bare_paced, 50)
        prompts[f"ratio_{mode}_to_bare_back_to_back"] = pct(lat, 50) / pct(bare_b2b, 50)
    out = {"streaming": stream, "prompts": prompts}
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    ex.remove_node(n)
    n.destroy_node()
    rclpy.shutdown(context=ctx)
    node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
