"""The console's annotation and review pages in a real headless Chromium, on the engine
in-process (the embedded default model): clicks make masks, brush and eraser strokes change
the saved mask exactly where drawn, undo/redo, labels, resume, review decisions in the files,
and errors from malformed messages shown on the page."""
import json
import os

import cv2
import numpy as np
import pytest

from sam_ros.data.scenes import generate_scene
from sam_ros.engine.factory import create_predictor
from sam_ros.engine.mask_utils import encode_rle, farthest_from_boundary, mask_to_rle, rle_to_mask
from sam_ros.tools.console.server import ConsoleServer, Hub
from sam_ros.tools.console.workbench import SESSION_FILE, Workbench

from browser_helpers import canvas_rgb, chromium_driver, click, drag, open_page, page_state, wait_for

H, W = 240, 320


@pytest.fixture(scope="module")
def driver():
    d = chromium_driver()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def predictor():
    return create_predictor("")


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed, H, W) for seed in (21, 22)]


def _write_images(folder, scenes):
    os.makedirs(folder, exist_ok=True)
    for i, s in enumerate(scenes):
        cv2.imwrite(os.path.join(folder, f"img{i}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))


def _wholes(scene, n=3):
    idx = [i for i in range(len(scene)) if scene.level[i] == 0 and scene.masks[i].sum() > 400]
    return sorted(idx, key=lambda i: -scene.masks[i].sum())[:n]


class Console:
    def __init__(self, predictor, images, out, review=False):
        self.bench = Workbench(predictor, images, out, review=review)
        self.server = ConsoleServer(Hub(self.bench), "127.0.0.1", 0).start()

    def stop(self):
        self.server.stop()


def _key(driver, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    mods = [k for k in keys[:-1]]
    for m in mods:
        chain = chain.key_down(m)
    chain = chain.send_keys(keys[-1])
    for m in reversed(mods):
        chain = chain.key_up(m)
    chain.perform()


def _drawn_after(driver, seq):
    return wait_for(lambda: driver.execute_script("return window.samConsole.frame") > seq, 20)


def _saved_mask(out, name, object_id):
    rec = json.load(open(os.path.join(out, f"{name}.json")))
    ann = next(a for a in rec["annotations"] if a["id"] == object_id)
    return rle_to_mask(ann["segmentation"]), ann, rec


def _segment_distance(size, p0, p1):
    yy, xx = np.mgrid[0:size[0], 0:size[1]].astype(np.float64)
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    d = b - a
    t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / (d @ d), 0, 1)
    return np.hypot(xx - a[0] - t * d[0], yy - a[1] - t * d[1])


def test_click_brush_eraser_undo_label_save_and_resume(driver, predictor, scenes, tmp_path):
    images, out = str(tmp_path / "images"), str(tmp_path / "out")
    _write_images(images, scenes)
    console = Console(predictor, images, out)
    try:
        open_page(driver, console.server.url)
        scene = scenes[0]
        target = _wholes(scene)[0]
        (x, y), _ = farthest_from_boundary(scene.masks[target])
        before = canvas_rgb(driver)
        assert np.abs(before.astype(int) - scene.image).max() <= 2  # PNG frames: the image itself
        seq = driver.execute_script("return window.samConsole.frame")
        click(driver, x, y)
        assert wait_for(lambda: len((page_state(driver) or {}).get("objects", [])) == 1)
        assert _drawn_after(driver, seq)
        # The page's click is the engine's click: the same mask as the predictor's for that point.
        direct = predictor.decode(predictor.encode(scene.image), np.array([[x, y]]), np.array([1]))
        best = int(np.argmax(direct.iou_predictions))
        assert np.array_equal(console.bench.doc.objects[0].mask, direct.masks[best])
        shown = np.abs(canvas_rgb(driver).astype(int) - scene.image).max(-1) > 20
        assert shown[y, x]
        iou_page = (shown & direct.masks[best]).sum() / (shown | direct.masks[best]).sum()
        assert iou_page > 0.8, iou_page  # what the page draws is the mask (plus outline and label)

        # Whole / part / subpart: one click offers three candidates; a key picks one.
        assert wait_for(lambda: len(driver.find_elements("css selector", "#levels button")) == 3)
        gt = scene.masks[target]
        k = int(np.argmax([(m & gt).sum() / (m | gt).sum() for m in direct.masks]))
        seq = driver.execute_script("return window.samConsole.frame")
        _key(driver, str(k + 1))
        assert wait_for(lambda: np.array_equal(console.bench.doc.objects[0].mask, direct.masks[k]))
        doc_mask = direct.masks[k]
        assert (doc_mask & gt).sum() / (doc_mask | gt).sum() > 0.8
        assert _drawn_after(driver, seq)

        _key(driver, "\ue009", "s")  # ctrl+s
        assert wait_for(lambda: os.path.exists(os.path.join(out, "img0.json")))
        saved0, _, _ = _saved_mask(out, "img0", 0)
        assert np.array_equal(saved0, doc_mask)

        # Brush: a stroke outside the object adds exactly the stroke's pixels.
        _key(driver, "b")
        assert wait_for(lambda: page_state(driver)["tool"] == "brush")
        empty = ~(scene.masks[target] | saved0)
        ys, xs = np.nonzero(empty[20:-20, 20:-60])
        p0 = (int(xs[0]) + 20, int(ys[0]) + 20)
        p1 = (p0[0] + 40, p0[1])
        radius = int(driver.find_element("id", "radius").get_attribute("value"))
        drag(driver, [p0, p1])
        assert wait_for(lambda: page_state(driver)["objects"][0]["edited"] and page_state(driver)["dirty"])
        _key(driver, "\ue009", "s")
        assert wait_for(lambda: not _saved_mask(out, "img0", 0)[0].__eq__(saved0).all())
        brushed, ann, _ = _saved_mask(out, "img0", 0)
        dist = _segment_distance((H, W), p0, p1)
        added, removed = brushed & ~saved0, saved0 & ~brushed
        assert removed.sum() == 0
        assert added.any() and dist[added].max() <= radius + 1.5
        assert brushed[dist <= radius - 1.5].all()
        assert ann["edited"] and ann["area"] == brushed.sum()

        # Eraser across the object removes exactly there.
        _key(driver, "e")
        assert wait_for(lambda: page_state(driver)["tool"] == "erase")
        e0, e1 = (x - 15, y), (x + 15, y)
        area = page_state(driver)["objects"][0]["area"]
        drag(driver, [e0, e1])
        assert wait_for(lambda: page_state(driver)["objects"][0]["area"] < area)
        _key(driver, "\ue009", "s")
        assert wait_for(lambda: not _saved_mask(out, "img0", 0)[0].__eq__(brushed).all())
        erased, _, _ = _saved_mask(out, "img0", 0)
        dist = _segment_distance((H, W), e0, e1)
        gone = brushed & ~erased
        assert (erased & ~brushed).sum() == 0
        assert gone.any() and dist[gone].max() <= radius + 1.5
        assert not erased[dist <= radius - 1.5].any()

        # Undo brings the brushed mask back, redo the erased one.
        _key(driver, "\ue009", "z")
        assert wait_for(lambda: np.array_equal(console.bench.doc.objects[0].mask, brushed))
        _key(driver, "\ue009", "y")
        assert wait_for(lambda: np.array_equal(console.bench.doc.objects[0].mask, erased))

        # A label, then a box for a second object and a background click refining it.
        driver.find_element("id", "label").send_keys("cup\n")
        assert wait_for(lambda: console.bench.doc.objects[0].label == "cup")
        _key(driver, "s")
        assert wait_for(lambda: page_state(driver)["tool"] == "segment")
        second = _wholes(scene)[1]
        ys, xs = np.nonzero(scene.masks[second])
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        drag(driver, [(box[0], box[1]), ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), (box[2], box[3])])
        assert wait_for(lambda: len(page_state(driver)["objects"]) == 2 and page_state(driver)["objects"][1]["area"] > 0)
        obj2 = console.bench.doc.objects[1]
        assert obj2.box is not None and obj2.mask.any()
        iou2 = (obj2.mask & scene.masks[second]).sum() / (obj2.mask | scene.masks[second]).sum()
        assert iou2 > 0.5, iou2
        bg = next((int(px), int(py)) for py, px in zip(*np.nonzero(obj2.mask & ~scene.masks[second]))) \
            if (obj2.mask & ~scene.masks[second]).any() else (box[0], box[1])
        old = obj2.mask.copy()
        click(driver, bg[0], bg[1], right=True)
        assert wait_for(lambda: page_state(driver)["objects"][1]["area"] != int(old.sum()))
        assert console.bench.doc.objects[1].labels == [0]
        assert not np.array_equal(console.bench.doc.objects[1].mask, old)

        # Next image saves this one; a new console on the same folders resumes there.
        _key(driver, "\ue014")  # arrow right
        assert wait_for(lambda: (page_state(driver) or {}).get("image", {}).get("name") == "img1")
        assert json.load(open(os.path.join(out, SESSION_FILE)))["current"] == "img1"
        _, ann0, rec = _saved_mask(out, "img0", 0)
        assert ann0["label"] == "cup" and len(rec["annotations"]) == 2
        assert os.path.exists(os.path.join(out, "img0.jpg"))
    finally:
        console.stop()
    again = Console(predictor, images, out)
    try:
        assert again.bench.doc.name == "img1"
        again.bench.handle({"action": "goto", "index": 0})
        assert [o.label for o in again.bench.doc.objects] == ["cup", ""]
        assert np.array_equal(again.bench.doc.objects[0].mask, erased)
        again.bench.handle({"action": "export_coco"})
        coco = json.load(open(os.path.join(out, "coco.json")))
        assert len(coco["annotations"]) == 2 and {c["name"] for c in coco["categories"]} == {"cup", "object"}
    finally:
        again.stop()
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


def test_review_accepts_rejects_adds_and_keeps_what_was_written(driver, predictor, scenes, tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    scene = scenes[1]
    wholes = _wholes(scene)
    anns = []
    for k, i in enumerate(wholes[:2]):
        ys, xs = np.nonzero(scene.masks[i])
        anns.append({"id": k, "segmentation": encode_rle(mask_to_rle(scene.masks[i])), "area": int(scene.masks[i].sum()),
                     "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                     "predicted_iou": 0.9 - k / 10, "stability_score": 0.97, "point_coords": [],
                     "crop_box": [0, 0, W, H], "source": "auto"})
    record = {"image": {"image_id": "frame_0", "file_name": "frame_0.jpg", "height": H, "width": W}, "annotations": anns}
    (dataset / "frame_0.json").write_text(json.dumps(record))
    cv2.imwrite(str(dataset / "frame_0.jpg"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    console = Console(predictor, str(dataset), str(dataset), review=True)
    try:
        open_page(driver, console.server.url)
        assert wait_for(lambda: len(driver.find_elements("css selector", "#list tbody tr")) == 2)
        assert page_state(driver)["mode"] == "review"
        for row, key, status in ((0, "a", "accepted"), (1, "r", "rejected")):
            driver.find_elements("css selector", "#list tbody tr")[row].click()
            assert wait_for(lambda: page_state(driver)["selected"] == row)
            _key(driver, key)
            assert wait_for(lambda: page_state(driver)["objects"][row]["review"] == status)
        # The missing object: a new one with a click.
        _key(driver, "n")
        assert wait_for(lambda: page_state(driver)["selected"] is None)
        missing = wholes[2]
        (x, y), _ = farthest_from_boundary(scene.masks[missing])
        click(driver, x, y)
        assert wait_for(lambda: len(page_state(driver)["objects"]) == 3)
        _key(driver, "\ue009", "s")
        assert wait_for(lambda: json.loads((dataset / "frame_0.json").read_text())["annotations"].__len__() == 3)
    finally:
        console.stop()
    saved = json.loads((dataset / "frame_0.json").read_text())["annotations"]
    assert saved[0]["review"] == "accepted" and saved[1]["review"] == "rejected"
    for old, new in zip(anns, saved[:2]):  # nothing already written is lost
        assert new["segmentation"] == old["segmentation"] and new["predicted_iou"] == old["predicted_iou"]
        assert new["source"] == "auto" and "edited" not in new
    added = rle_to_mask(saved[2]["segmentation"])
    assert added[y, x] and saved[2]["source"] == "click" and "review" not in saved[2]
    assert not [f for f in os.listdir(dataset) if f.endswith(".tmp")]


def test_bad_messages_show_an_error_on_the_page_and_the_console_goes_on(driver, predictor, scenes, tmp_path):
    images = str(tmp_path / "images")
    _write_images(images, scenes[:1])
    (tmp_path / "outside").mkdir()
    console = Console(predictor, images, str(tmp_path / "out"))
    try:
        open_page(driver, console.server.url)
        driver.execute_script("fetch('/api/action', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                              " body: '{not json'})")
        driver.execute_script("window.samConsole.act({action: 'click', x: 5000, y: 10})")
        driver.execute_script("window.samConsole.act({action: 'stroke', mode: 'brush', radius: 3, points: [[1, 1], [null, 2]]})")
        driver.execute_script("window.samConsole.act({action: 'open', path: '../outside'})")
        driver.execute_script("window.samConsole.act({action: 'rm_rf'})")
        driver.execute_script("fetch('/api/action', {method: 'POST', body: 'x'.repeat(300000)})")
        driver.execute_script("fetch('/api/action', {method: 'POST', body: '{\"action\": \"click\", \"x\": NaN, \"y\": 1}'})")
        expected = ("NaN is not a number", "malformed JSON", "outside [0, 320]", "finite number", "outside the folder", "unknown action",
                    "larger than the limit")
        text = lambda: driver.find_element("id", "errors").text
        assert wait_for(lambda: all(e in text() for e in expected), 20), text()
        scene = scenes[0]
        (x, y), _ = farthest_from_boundary(scene.masks[_wholes(scene)[0]])
        click(driver, x, y)
        assert wait_for(lambda: len((page_state(driver) or {}).get("objects", [])) == 1)
    finally:
        console.stop()
