"""The operator console: a browser page for clicking targets on a live camera (beside the sam_ros
node, through its topics) and for annotating and reviewing images with the engine in-process.

    python -m sam_ros.tools.console live                       # a ROS 2 node beside sam_ros
    python -m sam_ros.tools.console annotate IMAGES --out DIR   # folder of images, video or bag
    python -m sam_ros.tools.console review DATASET              # a data-engine output folder

Layers: `protocol` (validation of every browser message), `annotation` (objects, brush/eraser,
undo/redo, SA-1B and COCO files), `workbench` (annotate/review sessions on the engine),
`live` (targets and the rendered camera view, ROS-free), `live_ros` (the ROS 2 node), `server`
(HTTP, token, static files) and `static/` (the page; nothing comes from the internet).
"""
