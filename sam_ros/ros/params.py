"""The node's parameters: each declared with a default and a description, read into one object."""
from dataclasses import dataclass, fields
from typing import Any, Tuple

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


def declare_parameters(node: Any) -> NodeParams:
    """Declare every parameter on the node and return their current values."""
    values = {}
    for f in fields(NodeParams):
        desc = ParameterDescriptor(description=DESCRIPTIONS[f.name])
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        value = node.declare_parameter(f.name, default, desc).value
        values[f.name] = tuple(value) if isinstance(default, list) else value
    return NodeParams(**values)
