"""The node's parameters: each declared with a default and a description, read into one object;
which of them change at run time (`ros2 param set`) and the values each accepts."""
import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Tuple

from rcl_interfaces.msg import ParameterDescriptor


@dataclass
class NodeParams:
    # model
    checkpoint: str = ""
    model_variant: str = ""
    device: str = "cpu"
    encoder_dtype: str = "fp32"
    decoder_dtype: str = ""
    backend: str = "torch"
    backend_cache_dir: str = ""
    # inputs
    image_topic: str = "image"
    image_transport: str = "raw"
    image_qos: str = "sensor_data"
    click_topic: str = ""
    bg_click_topic: str = ""
    click_mode: str = "target"
    detections_topic: str = "detections"
    depth_topic: str = ""
    depth_info_topic: str = ""
    # behaviour
    cache_size: int = 4
    max_pending_prompts: int = 256
    prompt_wait_s: float = 1.0
    max_targets: int = 32
    multimask: bool = True
    stability_offset: float = 1.0
    prompt_priority: bool = True
    prompt_priority_max_pause_s: float = 0.25
    # tracking
    occluded_s: float = 1.0
    lost_s: float = 10.0
    max_queued_frames: int = 30
    # automatic masks ("segment everything")
    auto_masks_rate: float = 0.0
    auto_points_per_side: int = 16
    auto_pred_iou_thresh: float = 0.88
    auto_stability_thresh: float = 0.95
    auto_min_region_area: int = 0
    auto_region: Tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    # 3D from aligned depth
    depth_slop_s: float = 0.02
    depth_erode_px: int = 2
    depth_max_points: int = 2000
    # outputs
    publish_overlay: bool = True
    overlay_alpha: float = 0.5
    diagnostics_period_s: float = 1.0


DESCRIPTIONS = {
    "checkpoint": "SAM checkpoint (.pth/.pt/.safetensors): official SAM ViT-B/L/H, MobileSAM, SAM 2 / 2.1 "
                  "(sam2.1_hiera_*.pt; targets tracked by its memory), or ours. Empty: the embedded default model.",
    "model_variant": "vit_b, vit_l, vit_h, vit_t, sam_ros_tiny, sam2.1_hiera_t ...; empty: inferred from the "
                     "checkpoint.",
    "device": "torch device: cpu, cuda, cuda:1 ...",
    "encoder_dtype": "image encoder precision: fp32, fp16 or bf16.",
    "decoder_dtype": "prompt encoder + mask decoder precision (empty: same as the encoder).",
    "backend": "execution backend: auto (the fastest that agrees with eager fp32 on this machine, measured on "
               "first use and cached; picks the encoder precision too), torch, compile, onnxruntime, tensorrt.",
    "backend_cache_dir": "where compiled/exported engines are cached (empty: ~/.cache/sam_ros).",
    "image_topic": "camera image topic (remap it, e.g. -r image:=/camera/image_raw).",
    "image_transport": "raw (sensor_msgs/Image on image_topic) or compressed "
                       "(sensor_msgs/CompressedImage on <image_topic>/compressed).",
    "image_qos": "camera subscription QoS: sensor_data (best effort, as cameras publish) or reliable.",
    "click_topic": "geometry_msgs/Point clicks (foreground). Empty: <image_topic>_mouse_left, as rqt_image_view publishes.",
    "bg_click_topic": "geometry_msgs/Point background clicks refining the last click target. Empty: disabled.",
    "click_mode": "target: each click starts a tracked target (click_<n>); oneshot: segment the latest frame once.",
    "detections_topic": "vision_msgs/Detection2DArray boxes (used only where vision_msgs is installed).",
    "depth_topic": "aligned depth image (sensor_msgs/Image 16UC1 mm or 32FC1 m, registered to the colour camera, "
                   "e.g. /camera/aligned_depth_to_color/image_raw); empty: no 3D outputs.",
    "depth_info_topic": "the depth image's sensor_msgs/CameraInfo; empty: camera_info beside depth_topic.",
    "depth_slop_s": "a colour frame gets the depth image nearest in stamp within this (seconds); frames without "
                    "one are counted and get no 3D.",
    "depth_erode_px": "masks are eroded by this many pixels before depth is sampled (object edges).",
    "depth_max_points": "segmentation/points: at most this many points per target (evenly decimated; 0 = all).",
    "cache_size": "number of recent frames whose embeddings are kept for prompts (bounded memory).",
    "max_pending_prompts": "prompt queue bound; older prompts are dropped (and counted) beyond it.",
    "prompt_wait_s": "a prompt not served within this (its frame still being encoded, or a flood ahead of it) "
                     "is dropped and counted, never decoded late.",
    "max_targets": "maximum number of active targets; the oldest is dropped beyond it.",
    "multimask": "default for clicks: return the 3 ambiguity candidates and choose by predicted IoU.",
    "stability_offset": "logit offset of the stability score.",
    "prompt_priority": "CPU, torch backend: one thread runs all model work and decodes prompts between the image "
                       "encoder's layers, so a click neither waits for the encoder nor shares the cores with it. "
                       "false: a separate prompt thread (always so on CUDA and for compiled/exported encoders).",
    "prompt_priority_max_pause_s": "at most this much prompt work inside one frame's encoding (a prompt flood "
                                   "cannot starve the encoder).",
    "occluded_s": "a target absent (occluded or out of view) for longer than this is reported lost "
                  "and searched for in the whole image (seconds of source time).",
    "lost_s": "a target absent for longer than this ends (reported once with state ended).",
    "max_queued_frames": "frames waiting for the tracking thread beyond this are dropped (and counted); "
                         "normally at most one encoder pass of frames waits.",
    "auto_masks_rate": "publish all masks of the latest frame at this rate (Hz; 0 = off). "
                       "The ~/segment_everything service does it once on demand.",
    "auto_points_per_side": "automatic masks: grid of points per side.",
    "auto_pred_iou_thresh": "automatic masks: keep masks whose predicted IoU exceeds this.",
    "auto_stability_thresh": "automatic masks: keep masks whose stability score reaches this.",
    "auto_min_region_area": "automatic masks: remove islands and holes smaller than this (pixels; 0 = off).",
    "auto_region": "automatic masks only inside this box [x0, y0, x1, y1] in pixels; all zeros = whole frame.",
    "publish_overlay": "publish an overlay image (masks tinted per target, with IoU) when someone subscribes.",
    "overlay_alpha": "mask opacity in the overlay.",
    "diagnostics_period_s": "period of the diagnostic_msgs status on /diagnostics.",
}


# Read once at start (the model, the topics and QoS, the thread layout, timers): a change at run
# time is rejected with the reason; set them in the parameters file and restart the node.
RESTART_ONLY = frozenset({
    "checkpoint", "model_variant", "device", "encoder_dtype", "decoder_dtype", "backend", "backend_cache_dir",
    "image_topic", "image_transport", "image_qos", "click_topic", "bg_click_topic", "detections_topic",
    "depth_topic", "depth_info_topic",
    "prompt_priority", "diagnostics_period_s",
})


def _number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
        return "" if ok else f"must be a finite number {'>' if lo_open else '>='} {lo:g}" + \
            (f" and <= {hi:g}" if hi < math.inf else "")
    return check


def _region(v: Any) -> str:
    if len(v) != 4 or not all(math.isfinite(x) for x in v):
        return "must be 4 finite numbers [x0, y0, x1, y1]"
    if any(v) and not (v[2] > v[0] >= 0 and v[3] > v[1] >= 0):
        return "must be all zeros (whole frame) or a box with 0 <= x0 < x1 and 0 <= y0 < y1"
    return ""


# What each runtime-changeable parameter accepts (rclpy itself rejects a value of another type).
RUNTIME_CHECKS: Dict[str, Callable[[Any], str]] = {
    "click_mode": lambda v: "" if v in ("target", "oneshot") else "must be target or oneshot",
    "cache_size": _number(1), "max_pending_prompts": _number(1), "max_targets": _number(1),
    "max_queued_frames": _number(1), "prompt_wait_s": _number(0, lo_open=True),
    "prompt_priority_max_pause_s": _number(0), "stability_offset": _number(0, lo_open=True),
    "multimask": lambda v: "", "publish_overlay": lambda v: "",
    "occluded_s": _number(0, lo_open=True), "lost_s": _number(0, lo_open=True),
    "auto_masks_rate": _number(0), "auto_points_per_side": _number(1, 128),
    "auto_pred_iou_thresh": _number(0, 1), "auto_stability_thresh": _number(0, 1),
    "auto_min_region_area": _number(0), "auto_region": _region, "overlay_alpha": _number(0, 1),
    "depth_slop_s": _number(0), "depth_erode_px": _number(0, 50), "depth_max_points": _number(0),
}
assert set(RUNTIME_CHECKS) | RESTART_ONLY == {f.name for f in fields(NodeParams)}


def _typed(default: Any, value: Any) -> Tuple[Any, str]:
    """value as the parameter's type (that of its default; an integer passes for a float), or why not.
    The parameters are declared with dynamic typing so that a wrong type is rejected here, in words."""
    kind = type(default)
    if kind is tuple:
        if isinstance(value, str) or not hasattr(value, "__len__") or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return None, "must be a list of numbers"
        return tuple(float(v) for v in value), ""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value), ""
    if type(value) is not kind:
        return None, "must be " + {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a string")
    return value, ""


def check_values(values: Dict[str, Any], current: NodeParams, at_start: bool = False) -> Tuple[Dict[str, Any], str]:
    """New parameter values (name -> value) as the node takes them, and why they cannot be taken
    ("" when they can). At run time a restart-only parameter is refused; at start every one is
    checked (types and ranges)."""
    errors, out = [], {}
    for name, value in values.items():
        if name not in _DEFAULTS:
            continue  # not ours (e.g. use_sim_time)
        if name in RESTART_ONLY and not at_start:
            errors.append(f"{name} is read at start only: set it in the parameters file and restart the node")
            continue
        typed, why = _typed(_DEFAULTS[name], value)
        if not why and name in RUNTIME_CHECKS:
            why = RUNTIME_CHECKS[name](typed)
        if why:
            shown = typed if typed is not None else (value.tolist() if hasattr(value, "tolist") else value)
            errors.append(f"{name} {why} (got {shown!r})")
        else:
            out[name] = typed
    merged = {f.name: out.get(f.name, getattr(current, f.name)) for f in fields(NodeParams)}
    if not errors and merged["lost_s"] <= merged["occluded_s"]:
        errors.append(f"lost_s ({merged['lost_s']:g}) must be greater than occluded_s ({merged['occluded_s']:g})")
    return out, "; ".join(errors)


_DEFAULTS = {f.name: f.default for f in fields(NodeParams)}


def declare_parameters(node: Any) -> NodeParams:
    """Declare every parameter on the node and return their current values. ValueError when a
    value given at start has the wrong type or is out of its range (the checks of run time)."""
    values = {}
    for f in fields(NodeParams):
        desc = ParameterDescriptor(description=DESCRIPTIONS[f.name] + ("" if f.name in RUNTIME_CHECKS else
                                                                       " (restart to change)"),
                                   dynamic_typing=True)
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        values[f.name] = node.declare_parameter(f.name, default, desc).value
    typed, why = check_values(values, NodeParams(), at_start=True)
    if why:
        raise ValueError(f"bad parameters: {why}")
    return NodeParams(**typed)
