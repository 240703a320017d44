// The sam_ros console page: draws the frames the server renders, sends the operator's clicks,
// boxes and strokes as JSON actions, and shows the session state (targets / objects, errors).
"use strict";
(function () {
  const token = new URLSearchParams(location.search).get("token") || "";
  const headers = token ? { "X-Console-Token": token } : {};
  const view = document.getElementById("view");
  const overlay = document.getElementById("overlay");
  const vctx = view.getContext("2d");
  const octx = overlay.getContext("2d");
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  // Exposed for tests and benchmarks: what was drawn and when.
  const page = (window.samConsole = { frame: 0, count: 0, meta: "", drawn: [], state: null, errors: [], clicks: [] });
  let state = null;
  let radius = 8;

  function showError(message) {
    page.errors.push(message);
    const li = document.createElement("li");
    li.textContent = message;
    $("errors").prepend(li);
  }

  async function act(msg) {
    if (state && state.image && state.image.name !== undefined) msg.image = state.image.name;
    try {
      const r = await fetch("/api/action", {
        method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, headers),
        body: JSON.stringify(msg),
      });
      const out = await r.json();
      if (!out.ok) showError(out.error);
      return out;
    } catch (e) {
      showError("console unreachable: " + e);
      return { ok: false };
    }
  }
  page.act = act;

  // ---- frames: at most one request waits while one frame is decoded and drawn (never a queue) ---
  const fetchFrame = (after) => fetch("/api/frame?after=" + after, { headers });
  async function frameLoop() {
    let after = 0;
    let next = null; // the request for the frame after `after`, already on its way
    for (;;) {
      try {
        const r = await (next || fetchFrame(after));
        next = null;
        const seq = parseInt(r.headers.get("X-Frame-Seq") || "0", 10);
        if (r.status === 200) {
          const tResp = performance.now();
          const meta = r.headers.get("X-Frame-Meta") || "";
          const rendered = parseFloat(r.headers.get("X-Frame-Time") || "0");
          const blob = await r.blob();
          after = seq;
          next = fetchFrame(after);
          const tBlob = performance.now();
          const bmp = await createImageBitmap(blob);
          const tBmp = performance.now();
          if (view.width !== bmp.width || view.height !== bmp.height) {
            view.width = overlay.width = bmp.width;
            view.height = overlay.height = bmp.height;
          }
          vctx.drawImage(bmp, 0, 0);
          bmp.close();
          page.frame = seq;
          page.count += 1;
          page.meta = meta;
          // times on the page's clock (ms): response, body read, decoded, drawn; rendered: server, Unix s
          page.drawn.push({ seq: seq, t: performance.now(), meta: meta, resp: tResp, blob: tBlob, bmp: tBmp, rendered: rendered });
          if (page.drawn.length > 200) page.drawn.shift();
          document.body.dataset.frame = seq;
        } else if (r.status === 204) {
          after = seq;
        } else {
          await sleep(500);
        }
      } catch (e) {
        next = null;
        await sleep(500);
      }
    }
  }

  async function stateLoop() {
    let after = 0;
    let seenErrors = 0;
    for (;;) {
      try {
        const r = await fetch("/api/state?after=" + after, { headers });
        if (r.status !== 200) { await sleep(1000); continue; }
        state = await r.json();
        page.state = state;
        after = state.version;
        for (const e of state.errors) {
          if (e.n > seenErrors) { seenErrors = e.n; if (!page.errors.includes(e.message)) showError(e.message); }
        }
        render(state);
        document.body.dataset.version = state.version;
      } catch (e) {
        await sleep(1000);
      }
    }
  }

  // ---- the panel ----------------------------------------------------------------------------
  function render(s) {
    const live = s.mode === "live";
    document.body.className = s.mode;
    $("mode").textContent = s.mode;
    $("info").textContent = s.info || "";
    if (live) {
      const camera = s.image.width ? `${s.image.width}x${s.image.height}, ${s.image.frames} frames` : "waiting for the camera";
      const node = s.node && s.node.connected === false
        ? `; no sam_ros node listening yet${s.node.held ? ` (${s.node.held} held until it is)` : ""}` : "";
      $("imageinfo").textContent = camera + node;
    } else {
      $("imageinfo").textContent = `${s.image.name} (${s.image.index + 1}/${s.image.count})${s.dirty ? " *" : ""}`;
      for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === s.tool);
      $("undo").disabled = !s.can_undo;
      $("redo").disabled = !s.can_redo;
    }
    const rows = live ? s.targets : s.objects;
    const body = $("list").querySelector("tbody");
    body.textContent = "";
    let selected = null;
    for (const o of rows) {
      const tr = document.createElement("tr");
      const id = live ? o.id : o.id;
      tr.dataset.id = id;
      if (String(id) === String(s.selected)) { tr.className = "selected"; selected = o; }
      const name = live ? o.id : `#${o.id} ${o.label}`;
      const status = live ? o.state + (o.propagated ? " (propagated)" : "") : (o.review || (o.edited ? "edited" : ""));
      for (const v of [name, o.iou === null ? "" : o.iou.toFixed(2), status]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      const rm = document.createElement("button");
      rm.textContent = "x";
      rm.className = "remove-one";
      rm.onclick = (e) => { e.stopPropagation(); act(live ? { action: "remove", target: o.id } : { action: "remove", object: o.id }); };
      td.appendChild(rm);
      tr.appendChild(td);
      tr.onclick = () => act(live ? { action: "select", target: o.id } : { action: "select", object: o.id });
      body.appendChild(tr);
    }
    const levels = $("levels");
    levels.textContent = "";
    if (selected && selected.candidates && selected.candidates.length === 3) {
      ["whole", "part", "subpart"].forEach((name, i) => {
        const b = document.createElement("button");
        b.textContent = `${i + 1} ${name} ${selected.candidates[i].toFixed(2)}`;
        b.dataset.level = i;
        b.onclick = () => choose(i);
        levels.appendChild(b);
      });
    }
    if (!live && selected && document.activeElement !== $("label")) $("label").value = selected.label;
  }

  function isLive() { return state && state.mode === "live"; }
  function selectedKey() { return isLive() ? "target" : "object"; }
  function choose(i) { act({ action: "choose", index: i, [selectedKey()]: state.selected }); }
  function tool() { return isLive() ? "segment" : (state ? state.tool : "segment"); }

  // ---- mouse on the image -------------------------------------------------------------------
  function toImage(e) {
    const r = overlay.getBoundingClientRect();
    return [(e.clientX - r.left) * view.width / r.width, (e.clientY - r.top) * view.height / r.height];
  }
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  let drag = null;
  overlay.addEventListener("contextmenu", (e) => e.preventDefault());
  overlay.addEventListener("mousedown", (e) => {
    e.preventDefault();
    const p = toImage(e);
    drag = { start: p, points: [p], button: e.button, shift: e.shiftKey, t0: performance.now() };
    if (tool() !== "segment") drawStroke();
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const p = toImage(e);
    p[0] = clamp(p[0], view.width); p[1] = clamp(p[1], view.height);
    drag.points.push(p);
    if (tool() === "segment") drawBox(drag.start, p); else drawStroke();
  });
  window.addEventListener("mouseup", async (e) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    const p = d.points[d.points.length - 1];
    const moved = Math.hypot(p[0] - d.start[0], p[1] - d.start[1]);
    const t = tool();
    let out;
    if (t === "segment" && moved < 4) {
      const label = d.button === 2 || d.shift ? 0 : 1;
      out = await act({ action: "click", x: d.start[0], y: d.start[1], label: label });
    } else if (t === "segment") {
      out = await act({ action: "box", x0: d.start[0], y0: d.start[1], x1: p[0], y1: p[1] });
    } else {
      out = await act({ action: "stroke", mode: t, radius: radius, points: d.points.map((q) => [q[0], q[1]]) });
    }
    page.clicks.push({ t0: d.t0, target: out && (out.target || out.object), ok: out && out.ok });
    octx.clearRect(0, 0, overlay.width, overlay.height);
  });

  function drawBox(a, b) {
    octx.clearRect(0, 0, overlay.width, overlay.height);
    octx.strokeStyle = "#ff0";
    octx.lineWidth = 2;
    octx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
  }
  function drawStroke() {
    const pts = drag.points;
    octx.clearRect(0, 0, overlay.width, overlay.height);
    octx.strokeStyle = octx.fillStyle = tool() === "erase" ? "rgba(255,60,60,0.6)" : "rgba(80,255,120,0.6)";
    octx.lineWidth = 2 * radius;
    octx.lineCap = octx.lineJoin = "round";
    octx.beginPath();
    octx.moveTo(pts[0][0], pts[0][1]);
    for (const q of pts) octx.lineTo(q[0], q[1]);
    if (pts.length === 1) octx.lineTo(pts[0][0] + 0.01, pts[0][1]);
    octx.stroke();
  }

  // ---- buttons and keys ---------------------------------------------------------------------
  function setRadius(r) {
    radius = Math.max(1, Math.min(60, r));
    $("radius").value = radius;
    $("radius-value").textContent = radius;
  }
  $("radius").addEventListener("input", (e) => setRadius(parseInt(e.target.value, 10)));
  for (const b of document.querySelectorAll("[data-tool]")) b.onclick = () => act({ action: "tool", tool: b.dataset.tool });
  $("undo").onclick = () => act({ action: "undo" });
  $("redo").onclick = () => act({ action: "redo" });
  $("save").onclick = () => act({ action: "save" });
  $("coco").onclick = () => act({ action: "export_coco" });
  $("prev").onclick = () => act({ action: "prev" });
  $("next").onclick = () => act({ action: "next" });
  $("set-label").onclick = () => act({ action: "label", label: $("label").value });
  $("accept").onclick = () => act({ action: "review", status: "accepted" });
  $("reject").onclick = () => act({ action: "review", status: "rejected" });
  $("new").onclick = () => act({ action: "select", [selectedKey()]: null });
  $("remove").onclick = () => act({ action: "remove", [selectedKey()]: state && state.selected });
  $("remove-all").onclick = () => act({ action: "remove", all: true });
  $("label").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { act({ action: "label", label: $("label").value }); $("label").blur(); }
    e.stopPropagation();
  });
  window.addEventListener("keydown", (e) => {
    const k = e.key.toLowerCase();
    const ctrl = e.ctrlKey || e.metaKey;
    let msg = null;
    if (ctrl && k === "z") msg = { action: e.shiftKey ? "redo" : "undo" };
    else if (ctrl && k === "y") msg = { action: "redo" };
    else if (ctrl && k === "s") msg = { action: "save" };
    else if (ctrl) return;
    else if (k === "n" || k === "escape") msg = { action: "select", [selectedKey()]: null };
    else if (k === "delete" || k === "backspace") msg = e.shiftKey ? { action: "remove", all: true } : { action: "remove", [selectedKey()]: state && state.selected };
    else if (k === "1" || k === "2" || k === "3") { choose(parseInt(k, 10) - 1); e.preventDefault(); return; }
    else if (isLive()) return;
    else if (k === "s") msg = { action: "tool", tool: "segment" };
    else if (k === "b") msg = { action: "tool", tool: "brush" };
    else if (k === "e") msg = { action: "tool", tool: "erase" };
    else if (k === "[") { setRadius(radius - 1); return; }
    else if (k === "]") { setRadius(radius + 1); return; }
    else if (k === "arrowright" || k === "pagedown") msg = { action: "next" };
    else if (k === "arrowleft" || k === "pageup") msg = { action: "prev" };
    else if (k === "a") msg = { action: "review", status: "accepted" };
    else if (k === "r") msg = { action: "review", status: "rejected" };
    else if (k === "l") { $("label").focus(); e.preventDefault(); return; }
    if (msg) { e.preventDefault(); act(msg); }
  });

  frameLoop();
  stateLoop();
})();
