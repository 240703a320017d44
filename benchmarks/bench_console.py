"""The operator console in a real headless Chromium, live mode beside the real node over DDS.

Four processes on one host, as an operator would run them: the camera (640x480 at --rate Hz,
sensor-data QoS, bench_node.py's camera process), the sam_ros node (embedded default model,
CPU), the console (`python -m sam_ros.tools.console live`), and this script, which drives
Chromium and also talks to the node directly. Measures, in the same run:
- the page's frame rate (frames drawn on its canvas per second, from the page's own counter),
  with no target and with one tracked target, next to the camera rate;
- click on the page -> the new target's mask drawn on the page (the page's clock: mousedown to
  the first drawn frame whose server header lists the target), alternating with
- the node's own click latency: a sam_ros/Prompt with one point sent by this script -> the first
  SegmentationResult for that target received here (same point, same camera stream);
- per page click, what the console adds, independent of how long the node takes: mousedown ->
  the console's Prompt seen on DDS here (forward), and the node's first result for it seen here ->
  the mask drawn on the page (return); one host, so the page's clock (performance.timeOrigin +
  now) and this script's time.time() compare directly.

    python benchmarks/bench_console.py [--rate 30] [--seconds 10] [--clicks 20]
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
        extra = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        return f"{name} ({os.cpu_count()} cores; {' '.join(extra) or 'no AVX-512'})"
    except (OSError, StopIteration):
        return platform.processor()


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()

    import rclpy
    from geometry_msgs.msg import Point
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from bench_node import CameraProcess
    from browser_helpers import chromium_driver, click, open_page, page_state, wait_for
    from ros_helpers import NodeProcess, ros_env
    from sam_ros.msg import Prompt, SegmentationResult
    from sam_ros.tools.console.launch import LiveConsoleProcess

    domain = 20 + os.getpid() % 100
    node = NodeProcess(domain, params={"cache_size": 8, "publish_overlay": False})
    console = LiveConsoleProcess(ros_env(domain), cwd=ROOT)
    assert node.wait_for_log("listening on", 120), node.log
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    n = rclpy.create_node("bench_console", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(n)
    first_result = {}  # target id -> arrival time (time.time()) of its first result
    first_prompt = {}  # target id -> arrival time of the console's prompt
    n.create_subscription(SegmentationResult, "segmentation", lambda m: [
        first_result.setdefault(o.target_id, time.time()) for o in m.objects], 100)
    n.create_subscription(Prompt, "prompt", lambda m: first_prompt.setdefault(m.target_id, time.time()), 100)
    prompt_pub = n.create_publisher(Prompt, "prompt", 100)
    clear_pub = n.create_publisher(String, "clear_targets", 10)
    while prompt_pub.get_subscription_count() == 0:
        ex.spin_once(timeout_sec=0.05)
    # Callbacks stamp arrivals: the executor spins on a thread of its own the whole time.
    import threading

    spinning = [True]

    def spin():
        while spinning[0]:
            ex.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    spin_for = time.sleep

    cam = CameraProcess(a.rate, domain)
    driver = chromium_driver()
    out = {"cpu": cpu_model(), "rate": a.rate, "load_average_at_start": os.getloadavg()[0]}
    try:
        open_page(driver, console.url())
        assert wait_for(lambda: (page_state(driver) or {}).get("image", {}).get("width") == 640, 30)
        spin_for(3.0)

        def page_fps(seconds):
            # count: frames drawn by the page; frame: the server's render counter (one per camera frame
            # the console took, latest wins) of the last frame drawn.
            query = "return [window.samConsole.count, window.samConsole.frame, performance.now()]"
            c0, f0, t0 = driver.execute_script(query)
            spin_for(seconds)
            c1, f1, t1 = driver.execute_script(query)
            dt = (t1 - t0) / 1000
            return (c1 - c0) / dt, (f1 - f0) / dt

        out["page_fps_no_target"], out["console_rendered_fps_no_target"] = page_fps(a.seconds)
        points = [(200 + 37 * k % 240, 150 + 23 * k % 180) for k in range(a.clicks)]
        page_ms, node_ms, forward_ms, return_ms = [], [], [], []
        render_ms, transfer_ms, draw_ms, page_split = [], [], [], []
        for k, (x, y) in enumerate(points):
            # The node's own click latency: a prompt from here, its first result here.
            tid = f"bench_{k}"
            p = Prompt(target_id=tid, multimask=True)
            p.points, p.labels = [Point(x=float(x), y=float(y), z=0.0)], [1]
            t = time.time()
            prompt_pub.publish(p)
            end = t + 10
            while tid not in first_result and time.time() < end:
                time.sleep(0.001)
            if tid in first_result:
                node_ms.append((first_result[tid] - t) * 1000)
            clear_pub.publish(String(data=tid))
            spin_for(0.4)
            # The same click on the page: mousedown -> the new target's mask drawn on the page.
            n_clicks = driver.execute_script("return window.samConsole.clicks.length")
            driver.execute_script("window.samConsole.act({action: 'select', target: null})")
            click(driver, x * 1.0, y * 1.0)
            rec = wait_for(lambda: driver.execute_script(
                "const s = window.samConsole; const c = s.clicks[arguments[0]]; if (!c || !c.target) return null;"
                "const d = s.drawn.find(d => d.t > c.t0 && d.meta.split(',').includes(c.target));"
                "return d ? [c.t0, d.t, c.target, performance.timeOrigin, d.resp, d.rendered, d.blob, d.bmp] : null", n_clicks), 10)
            if rec:
                page_ms.append(rec[1] - rec[0])
                spin_for(0.05)
                origin_s = rec[3] / 1000
                if rec[2] in first_prompt and rec[2] in first_result:
                    forward_ms.append((first_prompt[rec[2]] - origin_s) * 1000 - rec[0])
                    return_ms.append(rec[1] - (first_result[rec[2]] - origin_s) * 1000)
                    # the return split: result -> rendered (console), rendered -> response on the
                    # page (waiting for the page's request + transfer), response -> drawn (page)
                    render_ms.append((rec[5] - first_result[rec[2]]) * 1000)
                    transfer_ms.append(rec[4] - (rec[5] - origin_s) * 1000)
                    draw_ms.append(rec[1] - rec[4])
                    page_split.append((rec[6] - rec[4], rec[7] - rec[6], rec[1] - rec[7]))
                driver.execute_script("window.samConsole.act({action: 'remove', target: arguments[0]})", rec[2])
            spin_for(0.4)
        out["node_click_ms"] = {"median": pct(node_ms, 50), "p95": pct(node_ms, 95), "n": len(node_ms)}
        out["page_click_ms"] = {"median": pct(page_ms, 50), "p95": pct(page_ms, 95), "n": len(page_ms)}
        out["page_minus_node_ms"] = pct(page_ms, 50) - pct(node_ms, 50)
        added = [f + r for f, r in zip(forward_ms, return_ms)]
        out["console_forward_ms"] = {"median": pct(forward_ms, 50), "p95": pct(forward_ms, 95)}
        out["console_return_ms"] = {"median": pct(return_ms, 50), "p95": pct(return_ms, 95)}
        out["console_added_ms"] = {"median": pct(added, 50), "p95": pct(added, 95), "n": len(added)}
        out["return_split_ms"] = {k: {"median": pct(v, 50), "p95": pct(v, 95)} for k, v in
                                  (("result_to_rendered", render_ms), ("rendered_to_page_response", transfer_ms),
                                   ("response_to_drawn", draw_ms))}
        out["page_split_ms"] = dict(zip(("body", "decode", "draw"), np.median(np.array(page_split), 0).tolist()))
        # Frame rate with one tracked target.
        click(driver, 320.0, 240.0)
        spin_for(2.0)
        out["page_fps_one_target"], out["console_rendered_fps_one_target"] = page_fps(a.seconds)
    finally:
        driver.quit()
        count, seconds = cam.stop()
        out["camera_fps"] = (count - 1) / seconds if seconds > 0 else float("nan")
        console.stop()
        node.stop()
        spinning[0] = False
        spinner.join(timeout=5)
        n.destroy_node()
        rclpy.shutdown(context=ctx)
    out["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
