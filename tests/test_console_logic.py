"""The console's ROS-free parts: message validation, strokes, the annotation document and its
SA-1B / COCO files, live-mode targets, path confinement, and the HTTP server's safety rules
(a real server on a loopback port, spoken to with urllib)."""
import json
import math
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from sam_ros.engine.mask_utils import rle_to_mask
from sam_ros.tools.console import protocol as P
from sam_ros.tools.console.annotation import AnnotationDocument, coco_from_records, mask_bbox, stroke_mask
from sam_ros.tools.console.live import LiveSession, ObjectView
from sam_ros.tools.console import server as server_mod
from sam_ros.tools.console.server import ConsoleServer, Hub
from sam_ros.tools.console.workbench import inside


# ---- protocol ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"x": 1}', "no 'action'"),
    (b'{"action": "click", "x": NaN}', "NaN"),
    (b'{"action": "click", "x": Infinity}', "Infinity"),
    (b"\xff\xfe", "malformed JSON"),
    (b'{"action": "' + b"a" * (P.MAX_MESSAGE_BYTES + 1) + b'"}', "larger than the limit"),
])
def test_parse_message_rejects_malformed_input(body, fragment):
    with pytest.raises(P.ProtocolError, match=fragment):
        P.parse_message(body)


def test_field_validation_bounds_and_types():
    size = (240, 320)
    assert P.point({"x": 320, "y": 0}, size) == (320.0, 0.0)
    for bad in ({"x": -1, "y": 5}, {"x": 5, "y": 240.5}, {"x": "5", "y": 5}, {"x": True, "y": 5}, {"y": 5},
                {"x": math.nan, "y": 5}):
        with pytest.raises(P.ProtocolError):
            P.point(bad, size)
    assert P.box({"x0": 50, "y0": 60, "x1": 10, "y1": 20}, size) == (10, 20, 50, 60)
    with pytest.raises(P.ProtocolError, match="smaller than one pixel"):
        P.box({"x0": 5, "y0": 5, "x1": 5.5, "y1": 30}, size)
    with pytest.raises(P.ProtocolError, match="at most"):
        P.polyline({"points": [[1, 1]] * (P.MAX_POINTS + 1)}, size)
    with pytest.raises(P.ProtocolError):
        P.polyline({"points": [[1, 1], [2]]}, size)
    with pytest.raises(P.ProtocolError, match="one of"):
        P.text({"mode": "paint"}, "mode", choices=("brush", "erase"))
    with pytest.raises(P.ProtocolError, match="control"):
        P.text({"label": "a\nb"}, "label")


# ---- strokes and the document -----------------------------------------------------------------
def test_stroke_mask_is_the_set_of_pixels_within_radius_of_the_polyline():
    size = (60, 80)
    pts = [(10.0, 10.0), (50.0, 30.0), (70.0, 12.5)]
    r = 4.5
    got = stroke_mask(size, pts, r)
    yy, xx = np.mgrid[0:60, 0:80]
    expect = np.zeros(size, bool)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):  # dense samples of each segment
        for t in np.linspace(0, 1, 400):
            px, py = ax + t * (bx - ax), ay + t * (by - ay)
            expect |= (xx - px) ** 2 + (yy - py) ** 2 <= r * r
    # Sampling the segment can only miss pixels right on the boundary.
    assert (expect & ~got).sum() == 0 and (got & ~expect).sum() <= 4
    disc = stroke_mask(size, [(20, 20)], 3)
    assert disc.sum() == 29 and disc[20, 20] and not disc[20, 24]


def test_document_strokes_undo_redo_and_sa1b_round_trip(tmp_path):
    doc = AnnotationDocument("img", (40, 50))
    start = np.zeros((40, 50), bool)
    start[10:20, 10:20] = True
    doc.checkpoint()
    obj = doc.add(start, label="cup", points=[(15.0, 15.0)], labels=[1], iou=0.9)
    doc.apply_stroke(obj.object_id, [(20, 15), (30, 15)], 2, erase=False)
    after_brush = doc.get(obj.object_id).mask.copy()
    assert after_brush[15, 28] and not start[15, 28] and after_brush.sum() > start.sum()
    doc.apply_stroke(obj.object_id, [(12, 12)], 1.5, erase=True)
    assert not doc.get(obj.object_id).mask[12, 12]
    assert doc.undo() and np.array_equal(doc.get(obj.object_id).mask, after_brush)
    assert doc.undo() and np.array_equal(doc.get(obj.object_id).mask, start)
    assert doc.redo() and np.array_equal(doc.get(obj.object_id).mask, after_brush)
    doc.checkpoint()
    doc.get(obj.object_id).review = "rejected"
    path = doc.save(str(tmp_path))
    rec = json.load(open(path))
    assert rec["image"] == {"image_id": "img", "file_name": "img.jpg", "height": 40, "width": 50}
    (ann,) = rec["annotations"]
    assert np.array_equal(rle_to_mask(ann["segmentation"]), after_brush)
    assert ann["area"] == after_brush.sum() and ann["bbox"] == mask_bbox(after_brush)
    assert ann["label"] == "cup" and ann["review"] == "rejected" and ann["edited"] is True
    again = AnnotationDocument.load(path)
    o = again.objects[0]
    assert np.array_equal(o.mask, after_brush) and o.label == "cup" and o.review == "rejected"
    assert o.points == [(15.0, 15.0)] and o.labels == [1]


def test_unknown_fields_of_a_data_engine_record_survive_a_save(tmp_path):
    mask = np.zeros((30, 30), bool)
    mask[5:9, 5:12] = True
    from sam_ros.engine.mask_utils import encode_rle, mask_to_rle

    record = {"image": {"image_id": "a", "file_name": "a.jpg", "height": 30, "width": 30, "camera": "left"},
              "annotations": [{"id": 7, "segmentation": encode_rle(mask_to_rle(mask)), "area": 28, "bbox": [5, 5, 7, 4],
                               "predicted_iou": 0.93, "stability_score": 0.97, "point_coords": [[8, 6]],
                               "crop_box": [0, 0, 30, 30], "source": "auto"}]}
    doc = AnnotationDocument.from_record("a", record)
    doc.checkpoint()
    doc.objects[0].review = "accepted"
    rec = json.load(open(doc.save(str(tmp_path))))
    ann = rec["annotations"][0]
    assert rec["image"]["camera"] == "left"
    assert ann["predicted_iou"] == 0.93 and ann["crop_box"] == [0, 0, 30, 30] and ann["source"] == "auto"
    assert ann["review"] == "accepted" and ann["id"] == 7 and "edited" not in ann


def test_coco_export_loads_in_pycocotools(tmp_path):
    pycoco = pytest.importorskip("pycocotools.coco")
    recs = []
    for k in range(2):
        doc = AnnotationDocument(f"im{k}", (20, 30))
        for j, label in enumerate(("cup", "")):
            m = np.zeros((20, 30), bool)
            m[2 + j:8 + j, 3 + 5 * k:9 + 5 * k] = True
            doc.checkpoint()
            doc.add(m, label=label)
        doc.objects[1].review = "rejected" if k == 1 else ""
        recs.append(doc.to_record())
    coco = coco_from_records(recs)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    c = pycoco.COCO(str(path))
    assert len(c.getImgIds()) == 2 and len(c.getAnnIds()) == 3  # the rejected one is left out
    assert {x["name"] for x in c.loadCats(c.getCatIds())} == {"cup", "object"}
    ann = c.loadAnns(c.getAnnIds(imgIds=[2]))[0]
    assert np.array_equal(c.annToMask(ann).astype(bool), rle_to_mask(recs[1]["annotations"][0]["segmentation"]))


def test_inside_refuses_paths_outside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", root / "link")
    assert inside(str(root), "sub") == str((root / "sub").resolve())
    for bad in ("..", "../secret", "sub/../../secret", str(tmp_path / "secret"), "link"):
        with pytest.raises(P.ProtocolError, match="outside"):
            inside(str(root), bad)


# ---- live mode without ROS ----------------------------------------------------------------------
def _crop_view(tid, y0, x0, h, w, **kw):
    return ObjectView(tid, np.ones((h, w), bool), (x0, y0), 0.9, 0.95, h * w, **kw)


def test_live_session_clicks_refine_the_selected_target_and_remove_clears_it():
    sent = []
    s = LiveSession(publish=lambda kind, payload: sent.append((kind, payload)))
    with pytest.raises(P.ProtocolError, match="no image"):
        s.handle({"action": "click", "x": 1, "y": 1})
    s.on_frame(np.zeros((100, 120, 3), np.uint8), 1)
    r = s.handle({"action": "click", "x": 10, "y": 20})
    tid = r["target"]
    assert sent[-1][0] == "prompt" and sent[-1][1].points == [(10.0, 20.0)] and sent[-1][1].multimask
    s.handle({"action": "click", "x": 30, "y": 40, "label": 0})
    spec = sent[-1][1]
    assert spec.target_id == tid and spec.labels == [1, 0] and not spec.multimask
    with pytest.raises(P.ProtocolError, match="outside"):
        s.handle({"action": "click", "x": 121, "y": 40})
    r2 = s.handle({"action": "box", "x0": 5, "y0": 5, "x1": 50, "y1": 60})
    assert r2["target"] != tid and sent[-1][1].box == (5, 5, 50, 60)
    s.on_result([_crop_view(tid, 10, 10, 20, 30, state="occluded", propagated=True, age=4)])
    st = s.state()
    row = next(t for t in st["targets"] if t["id"] == tid)
    assert row["state"] == "occluded" and row["propagated"] and row["age"] == 4 and row["iou"] == 0.9
    img = s.render()
    assert img[20, 20].any() and not img[90, 110].any()  # the mask is drawn, the rest stays black
    s.handle({"action": "remove", "target": tid})
    assert sent[-1] == ("clear", tid) and all(t["id"] != tid for t in s.state()["targets"])
    s.handle({"action": "remove", "all": True})
    assert sent[-1] == ("clear", "") and s.state()["targets"] == []
    with pytest.raises(P.ProtocolError, match="unknown action"):
        s.handle({"action": "format_disk"})
    with pytest.raises(P.ProtocolError, match="background click"):
        s.handle({"action": "click", "x": 3, "y": 3, "label": 0})


def test_live_session_choose_sends_the_chosen_candidate_as_mask_prompt():
    sent = []
    s = LiveSession(publish=lambda kind, payload: sent.append((kind, payload)))
    s.on_frame(np.zeros((50, 60, 3), np.uint8), 1)
    tid = s.handle({"action": "click", "x": 10, "y": 10})["target"]
    cands = [(np.ones((h, h), bool), (2, 3), iou) for h, iou in ((30, 0.8), (10, 0.9), (4, 0.7))]
    s.on_result([_crop_view(tid, 3, 2, 10, 10, candidates=cands, chosen=1)])
    # The node's per-frame results carry one mask: the click's three candidates stay on offer.
    s.on_result([_crop_view(tid, 4, 2, 10, 10)])
    assert s.state()["targets"][0]["candidates"] == [0.8, 0.9, 0.7]
    s.handle({"action": "choose", "target": tid, "index": 0})
    spec = sent[-1][1]
    assert spec.mask_input.shape == (50, 60) and spec.mask_input.sum() == 900 and spec.mask_input[3, 2]
    assert not spec.multimask and spec.points == [(10.0, 10.0)]
    s.on_result([_crop_view(tid, 3, 2, 30, 30)])
    assert s.state()["targets"][0]["candidates"] == [0.8, 0.9, 0.7]  # the choice can still change
    # A new click on the target: its decode brings its own candidates (none while waiting).
    s.handle({"action": "click", "x": 20, "y": 20, "label": 0})
    s.on_result([_crop_view(tid, 3, 2, 30, 30)])
    assert s.state()["targets"][0]["candidates"] == []


# ---- the HTTP server's safety rules --------------------------------------------------------------
def _request(url, body=None, headers=None, method=None):
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_hub_draws_a_new_target_at_once_and_a_tracked_one_with_the_next_frame():
    session = LiveSession()
    hub = Hub(session)
    try:
        session.on_frame(np.zeros((40, 60, 3), np.uint8), 1)
        seq, _, _, meta, _ = hub.next_frame(0, 2.0)
        assert seq >= 1 and meta == ""
        v0 = hub.version
        session.on_result([_crop_view("t1", 5, 5, 10, 10)])  # a new target: rendered and announced now
        seq1, _, _, meta, _ = hub.next_frame(seq, 2.0)
        assert meta == "t1" and hub.version > v0
        v1, t = hub.version, time.monotonic()
        session.on_result([_crop_view("t1", 6, 5, 10, 10)])  # the same target tracked: no render of its own
        assert hub.next_frame(seq1, 0.05)[0] == seq1 and hub.version == v1
        session.on_frame(np.zeros((40, 60, 3), np.uint8), 2)  # drawn with the next camera frame
        seq2 = hub.next_frame(seq1, 2.0)[0]
        assert seq2 == seq1 + 1
        # ... and without camera frames, after MINOR_RENDER_S; its scores reach the state within MINOR_STATE_S
        session.on_result([_crop_view("t1", 7, 5, 10, 10)])
        assert hub.next_frame(seq2, 2.0)[0] == seq2 + 1
        hub.state(v1, 2.0)
        assert hub.version > v1 and time.monotonic() - t >= server_mod.MINOR_STATE_S * 0.9
    finally:
        hub.close()


@pytest.fixture()
def live_server():
    session = LiveSession()
    session.on_frame(np.zeros((40, 60, 3), np.uint8), 1)
    server = ConsoleServer(Hub(session), "127.0.0.1", 0).start()
    yield server
    server.stop()


def test_server_validates_every_message_and_keeps_serving(live_server):
    base = f"http://127.0.0.1:{live_server.port}"
    post = lambda body, **h: _request(base + "/api/action", body, {"Content-Type": "application/json", **h})
    cases = [(b"{oops", 400, "malformed JSON"), (b'{"action": "launch"}', 400, "unknown action"),
             (b'{"action": "click", "x": NaN, "y": 1}', 400, "NaN"),
             (b'{"action": "click", "x": 61, "y": 1}', 400, "outside"),
             (b'{"action": "click", "x": 1e309, "y": 1}', 400, "finite"),
             (b'{"action": "box", "x0": 1, "y0": 1}', 400, "missing")]
    for body, code, fragment in cases:
        status, out, _ = post(body)
        assert status == code and fragment in json.loads(out)["error"], (body, out)
    status, out, _ = post(b"x" * (P.MAX_MESSAGE_BYTES + 10))
    assert status == 413 and "larger than the limit" in json.loads(out)["error"]
    status, out, _ = _request(base + "/api/action", b'{"action": "remove", "all": true}',
                              {"Content-Type": "application/json", "Origin": "http://evil.example"})
    assert status == 403 and "another origin" in json.loads(out)["error"]
    # Each error is in the state the page shows; the server still serves a valid action.
    state = json.loads(_request(base + "/api/state?after=0")[1])
    messages = " | ".join(e["message"] for e in state["errors"])
    assert "malformed JSON" in messages and "unknown action" in messages and "larger than the limit" in messages
    status, out, _ = post(b'{"action": "click", "x": 5, "y": 6}')
    assert status == 200 and json.loads(out)["ok"]
    assert json.loads(_request(base + "/api/state?after=0")[1])["targets"][0]["state"] == "waiting"


def test_server_serves_only_its_own_static_files_and_checks_the_host(live_server):
    base = f"http://127.0.0.1:{live_server.port}"
    assert _request(base + "/")[0] == 200
    assert _request(base + "/static/console.js")[0] == 200
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/index.html/../../protocol.py",
                 "/static/", "/etc/passwd", "/static/../../../../etc/passwd"):
        assert _request(base + path)[0] == 404, path
    # DNS rebinding: a page of another site resolving to 127.0.0.1 sends its own Host.
    assert _request(base + "/api/state", headers={"Host": "evil.example:80"})[0] == 403


def test_non_loopback_needs_a_token_and_the_token_is_checked():
    with pytest.raises(ValueError, match="requires a token"):
        ConsoleServer(Hub(LiveSession()), "0.0.0.0", 0)
    server = ConsoleServer(Hub(LiveSession()), "0.0.0.0", 0, token="s3cret-token").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _request(base + "/")[0] == 403
        assert _request(base + "/api/state?token=wrong")[0] == 403
        assert _request(base + "/api/action", b'{"action": "remove", "all": true}')[0] == 403
        status, _, headers = _request(base + "/?token=s3cret-token")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
        assert _request(base + "/api/state", headers={"X-Console-Token": "s3cret-token"})[0] == 200
        assert _request(base + "/static/console.js", headers={"Cookie": "sam_ros_console_token=s3cret-token"})[0] == 200
    finally:
        server.stop()


# ---- the workbench on a video (frames extracted once into the output folder) ------------------------
def test_workbench_on_a_video_extracts_frames_and_resumes(tmp_path, tiny_predictor):
    import cv2

    from sam_ros.tools.console.workbench import Workbench

    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for k in range(20):
        frame = np.full((48, 64, 3), 40, np.uint8)
        cv2.rectangle(frame, (5 + k, 10), (25 + k, 30), (0, 200, 255), -1)
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    bench = Workbench(tiny_predictor, video, str(out), rate=5.0)
    assert bench.names == [f"clip_{i:06d}" for i in range(0, 20, 2)]
    assert all((out / f"{n}.jpg").exists() for n in bench.names)
    bench.handle({"action": "goto", "index": 3})
    bench.handle({"action": "tool", "tool": "brush"})
    r = bench.handle({"action": "stroke", "mode": "brush", "radius": 3, "points": [[10, 10], [20, 12]]})
    assert bench.doc.get(r["object"]).mask.sum() > 30
    with pytest.raises(P.ProtocolError, match="for image"):
        bench.handle({"action": "undo", "image": "clip_000000"})
    with pytest.raises(P.ProtocolError, match="outside"):
        bench.handle({"action": "open", "path": "../.."})
    with pytest.raises(P.ProtocolError, match="eraser"):
        bench.handle({"action": "stroke", "mode": "erase", "radius": 3, "points": [[1, 1]], "new": True})
    bench.handle({"action": "next"})  # saves the edited image
    again = Workbench(tiny_predictor, video, str(out), rate=5.0)
    assert again.index == 4
    again.handle({"action": "prev"})
    assert len(again.doc.objects) == 1 and again.doc.objects[0].source == "brush"


def test_workbench_on_a_ros2_bag_skips_a_broken_message(tmp_path, tiny_predictor):
    pytest.importorskip("rosbags")
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from sam_ros.tools.console.workbench import Workbench

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, Header, Time = (store.types[f"{t}"] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                          "builtin_interfaces/msg/Time"))
    bag = tmp_path / "bag"
    with Writer(bag, version=8) as writer:
        conn = writer.add_connection("/cam", Image.__msgtype__, typestore=store)
        for i in range(4):
            img = np.full((32, 48, 3), 30 * i, np.uint8)
            data = img.reshape(-1) if i != 2 else np.zeros(10, np.uint8)  # frame 2 is broken
            msg = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=32, width=48,
                        encoding="rgb8", is_bigendian=0, step=48 * 3, data=data)
            writer.write(conn, i * 1_000_000_000, store.serialize_cdr(msg, Image.__msgtype__))
    bench = Workbench(tiny_predictor, str(bag), str(tmp_path / "out"), rate=0)
    assert bench.names == [f"cam_{i * 1_000_000_000}" for i in (0, 1, 3)]
    assert bench.state()["image"] == {"name": "cam_0", "index": 0, "count": 3, "width": 48, "height": 32}
