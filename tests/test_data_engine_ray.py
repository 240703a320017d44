"""The data engine on a real local Ray cluster (2 CPUs, started and stopped here): the same files
as the local run byte for byte, resumable, a corrupt image skipped, a worker process killed
mid-run losing nothing, and a clear sentence when Ray is missing."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest
import ray

from sam_ros.data.scenes import SceneSequence
from sam_ros.tools import data_engine
from sam_ros.tools.data_engine_ray import MISSING_RAY

# --threads 1: the local run sums floats with as many threads as a 1-CPU actor does.
ARGS = ["--points-per-side", "6", "--pred-iou-thresh", "0.5", "--stability-thresh", "0.6", "--threads", "1",
        "--no-progress"]
N_IMAGES = 6


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, namespace="sam_ros_test",
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A folder of images (one corrupt) and its dataset from the local run."""
    root = tmp_path_factory.mktemp("engine")
    src = root / "images"
    src.mkdir()
    seq = SceneSequence(23, height=160, width=224)
    for i in range(N_IMAGES):
        cv2.imwrite(str(src / f"frame_{i}.png"), cv2.cvtColor(seq.frame(4 * i).image, cv2.COLOR_RGB2BGR))
    (src / "frame_3b.png").write_bytes(b"\x89PNG but not really")
    out = root / "local"
    assert data_engine.main([str(src), "--out", str(out)] + ARGS) == 0
    return src, out


def _files(folder):
    """Every output file but summary.json, as bytes."""
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder)) if n != "summary.json"}


def _summary(folder):
    s = json.loads((folder / "summary.json").read_text())
    return list(s["images"].items()), list(s["skipped"].items()), s["total_masks"]


def test_ray_run_is_the_local_run_and_resumes(cluster, reference, tmp_path):
    src, local = reference
    expected = _files(local)
    assert len([n for n in expected if n.endswith(".json")]) == N_IMAGES
    out = tmp_path / "ray"
    # Interrupted after 3 images (the limit), then resumed with another worker count.
    assert data_engine.main([str(src), "--out", str(out), "--ray", "--workers", "2", "--limit", "3"] + ARGS) == 0
    assert len([n for n in os.listdir(out) if n.endswith(".json")]) == 3 + 1  # + summary.json
    assert data_engine.main([str(src), "--out", str(out), "--ray", "--workers", "1"] + ARGS) == 0
    assert _files(out) == expected  # byte for byte, JPEGs too; no tmp file left behind
    images, skipped, masks = _summary(out)
    assert (images, skipped, masks) == _summary(local)  # in input order, whatever order the actors finished
    assert [name for name, _ in skipped] == ["frame_3b"] and masks > N_IMAGES


def test_a_bag_with_a_broken_message_on_ray(cluster, tmp_path):
    """Bag frames are decoded by the driver and travel as images (a folder's travel as file bytes):
    the same files as the local run; the broken message is logged and skipped."""
    from test_data_engine import write_camera_bag

    seq = SceneSequence(29, height=128, width=160)
    write_camera_bag(tmp_path / "bag", [seq.frame(5 * i).image for i in range(3)])
    args = [str(tmp_path / "bag"), "--topic", "/camera/image_raw"] + ARGS
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert data_engine.main(args + ["--out", str(local)]) == 0
    assert data_engine.main(args + ["--out", str(on_ray), "--ray", "--workers", "1"]) == 0
    assert len([n for n in _files(local) if n.endswith(".json")]) == 3
    assert _files(on_ray) == _files(local)
    images, skipped, _ = _summary(on_ray)
    assert (images, skipped) == _summary(local)[:2] and len(skipped) == 1


def test_a_worker_killed_mid_run_loses_nothing(cluster, reference, tmp_path):
    """The command line against the running cluster's address; one worker process is SIGKILLed
    after the first image is written: its unfinished images are redone, each written once."""
    src, local = reference
    out = tmp_path / "ray"
    log = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "sam_ros.tools.data_engine", str(src), "--out", str(out), "--ray", cluster,
           "--workers", "2"] + ARGS
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        pids, deadline = [], time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            pids = [int(line.split()[3]) for line in log.read_text().splitlines() if line.startswith("worker 0: pid")]
            if pids and out.exists() and any(n.endswith(".json") and n != "summary.json" for n in os.listdir(out)):
                break
            time.sleep(0.05)
        assert pids and proc.poll() is None, log.read_text()
        os.kill(pids[0], signal.SIGKILL)  # worker 0 holds its running image and the next one
        stdout, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, log.read_text()
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["worker_restarts"] == 1 and report["redone"] >= 1, report
    assert report["new"] == N_IMAGES  # each image written exactly once, none twice, none lost
    assert "worker 0 died" in log.read_text()
    assert _files(out) == _files(local)
    assert _summary(out) == _summary(local)


def test_cuda_workers_on_a_cluster_without_gpus(cluster, reference, tmp_path, capsys):
    src, _ = reference
    assert data_engine.main([str(src), "--out", str(tmp_path / "o"), "--ray", "--device", "cuda"] + ARGS) == 1
    assert "the Ray cluster has no GPUs" in capsys.readouterr().err


def test_missing_ray_is_one_sentence(reference, tmp_path):
    src, _ = reference
    code = ("import sys; sys.modules['ray'] = None; from sam_ros.tools import data_engine; "
            f"sys.exit(data_engine.main([{str(src)!r}, '--out', {str(tmp_path / 'o')!r}, '--ray']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == MISSING_RAY and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
