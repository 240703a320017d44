"""End-to-end through DDS: the node in its own process, a 640x480 camera and prompts from this one.

Measures (embedded default model, CPU):
- frames in vs results out per second with one tracked target, camera at --rate Hz;
- prompt-to-result latency (median, p95) for a click on a cached frame, with the camera stopped
  (idle encoder) and while the camera streams (busy encoder), next to the bare decoder time
  (same model, frame and clicks, called back to back in a quiet process of its own);
- the node's own overhead: end-to-end latency minus the model time it reports.

    python benchmarks/bench_node.py [--rate 15] [--seconds 20] [--prompts 100] [--prompt-priority 0]
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


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def bare_decoder(count, tuned):
    """The bare decoder: the same model, frame and clicks as the node gets, called back to back
    from Python (prompt encoder + mask decoder + postprocess to 640x480, multimask), with or
    without the allocator setting the node uses (keep_freed_memory). Milliseconds."""
    from sam_ros.data.scenes import SceneSequence
    from sam_ros.engine.factory import create_predictor
    from sam_ros.engine.runtime import keep_freed_memory

    if tuned:
        keep_freed_memory()
    predictor = create_predictor()
    emb = predictor.encode(SceneSequence(5, height=480, width=640).frame(0).image)
    times = []
    for k in range(-10, count):
        t = time.perf_counter()
        predictor.decode(emb, np.array([[100 + 4 * k % 440, 120 + 3 * k % 240]], float), np.array([1]))
        if k >= 0:
            times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--prompt-priority", type=int, default=1, choices=(0, 1),
                    help="the node's prompt_priority parameter (encoder pauses while prompts decode)")
    ap.add_argument("--json")
    ap.add_argument("--bare", type=int, choices=(0, 1), help=argparse.SUPPRESS)  # internal: the bare decoder
    a = ap.parse_args()
    if a.bare is not None:
        print(json.dumps(bare_decoder(a.prompts, bool(a.bare))))
        return 0
    # The bare decoder first, each variant in its own quiet process (nothing else running on the
    # 2 cores); the ratios below use the faster one.
    bare_runs = {tuned: json.loads(subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--bare", str(tuned), "--prompts", str(a.prompts)],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]) for tuned in (0, 1)}
    bare = min(bare_runs.values(), key=lambda v: pct(v, 50))

    import rclpy
    from geometry_msgs.msg import Point
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ros_helpers import NodeProcess
    from sam_ros.data.scenes import SceneSequence
    from sam_ros.msg import Prompt, SegmentationResult
    from sam_ros.ros.conversions import fill_image_msg, stamp_key

    domain = 90 + os.getpid() % 100
    node = NodeProcess(domain, params={"cache_size": 8, "publish_overlay": False,
                                      "prompt_priority": bool(a.prompt_priority)})
    assert node.wait_for_log("listening on", 120), node.log
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    n = rclpy.create_node("bench", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)
    received = []
    n.create_subscription(SegmentationResult, "segmentation", lambda m: received.append((time.monotonic(), m)), 100)
    img_pub = n.create_publisher(Image, "image", qos_profile_sensor_data)
    prompt_pub = n.create_publisher(Prompt, "prompt", 100)
    click_pub = n.create_publisher(Point, "image_mouse_left", 10)
    end = time.monotonic() + 30
    while time.monotonic() < end and (img_pub.get_subscription_count() == 0 or prompt_pub.get_subscription_count() == 0):
        ex.spin_once(timeout_sec=0.05)

    seq = SceneSequence(5, height=480, width=640)
    frames = [seq.frame(t).image for t in range(30)]
    sent = {}
    sec = [100]

    def publish(i):
        msg = fill_image_msg(Image(), frames[i % len(frames)], "rgb8")
        sec[0] += 1
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec[0], 0
        msg.header.frame_id = "camera"
        sent[stamp_key(msg.header.stamp)] = time.monotonic()
        img_pub.publish(msg)
        return msg.header

    def spin_for(seconds):
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            ex.spin_once(timeout_sec=max(0.0, min(0.05, t_end - time.monotonic())))

    # Warm up and start a tracked target with a click.
    for i in range(5):
        publish(i)
        spin_for(0.2)
    click_pub.publish(Point(x=320.0, y=240.0, z=0.0))
    spin_for(1.0)

    def prompt_round(header, count, camera=False):
        # Like a real client, this process blocks in its executor until a message arrives (or the
        # next camera frame is due) instead of polling: a polling client takes a core from the
        # node on this 2-core machine and the measurement would be of that contention.
        lat, dec, i = [], [], 0
        for k in range(count):
            p = Prompt(header=header, target_id="", multimask=True)
            p.points = [Point(x=float(100 + 4 * k % 440), y=float(120 + 3 * k % 240), z=0.0)]
            p.labels = [1]
            before = len(received)
            t0 = time.monotonic()
            prompt_pub.publish(p)
            while time.monotonic() - t0 < 5:
                timeout = 0.05
                if camera:
                    due = last_frame[0] + 1.0 / a.rate
                    if time.monotonic() >= due:
                        publish(i)
                        i += 1
                        last_frame[0] = due = time.monotonic()
                        due += 1.0 / a.rate
                    timeout = max(0.0, due - time.monotonic())
                ex.spin_once(timeout_sec=timeout)
                got = [m for _, m in received[before:] if m.objects and m.objects[0].source == "prompt"]
                if got:
                    lat.append((time.monotonic() - t0) * 1000)
                    dec.append(got[0].decoder_ms)
                    break
        return lat, dec

    # 1) Streaming: frames in vs results out, with the target tracked.
    received.clear()
    t0 = time.monotonic()
    i = 0
    next_t = t0
    while time.monotonic() - t0 < a.seconds:
        if time.monotonic() >= next_t:
            publish(i)
            i += 1
            next_t += 1.0 / a.rate
        ex.spin_once(timeout_sec=max(0.0, next_t - time.monotonic()))
    elapsed = time.monotonic() - t0
    spin_for(1.0)
    tracked = [(t, m) for t, m in received if m.objects and m.objects[0].source == "target"]
    e2e = [(t - sent[stamp_key(m.header.stamp)]) * 1000 for t, m in tracked if stamp_key(m.header.stamp) in sent]
    model_ms = [m.encoder_ms + m.decoder_ms for _, m in tracked]
    overhead = [e - mm for e, mm in zip(e2e, model_ms)]
    stream = {"camera_fps": i / elapsed, "results_fps": len(tracked) / elapsed,
              "frame_to_result_ms_median": pct(e2e, 50), "frame_to_result_ms_p95": pct(e2e, 95),
              "encoder_ms_median": pct([m.encoder_ms for _, m in tracked], 50),
              "overhead_ms_median (end-to-end minus encoder+decoder, includes waiting for the encoder)": pct(overhead, 50)}

    # 2) Prompts on a cached frame, idle encoder (camera stopped).
    last = publish(0)
    spin_for(1.5)
    lat_idle, dec_idle = prompt_round(last, a.prompts)
    # 3) Prompts while the camera streams (busy encoder).
    last_frame = [time.monotonic()]
    lat_busy, dec_busy = prompt_round(last, a.prompts // 2, camera=True)

    prompts = {"bare_decoder_ms_median": pct(bare, 50), "bare_decoder_ms_median_default_malloc": pct(bare_runs[0], 50),
               "bare_decoder_ms_median_keep_freed_memory": pct(bare_runs[1], 50),
               "prompt_latency_ms_median_idle": pct(lat_idle, 50), "prompt_latency_ms_p95_idle": pct(lat_idle, 95),
               "node_decoder_ms_median_idle": pct(dec_idle, 50), "node_decoder_ms_median_busy": pct(dec_busy, 50),
               "overhead_ms_median_idle": pct([x - d for x, d in zip(lat_idle, dec_idle)], 50),
               "ratio_prompt_latency_to_bare_decoder_idle": pct(lat_idle, 50) / pct(bare, 50),
               "prompt_latency_ms_median_busy": pct(lat_busy, 50), "prompt_latency_ms_p95_busy": pct(lat_busy, 95),
               "ratio_prompt_latency_to_bare_decoder_busy": pct(lat_busy, 50) / pct(bare, 50)}
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
