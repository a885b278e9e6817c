"""A manifest for a segmentation model file that has none, from its output shapes.

:func:`~ubiq.models.runtime.model.find_manifest` asks here when no detection decoder fits a
model's outputs: a label map, score maps or Ultralytics ``-seg`` outputs make it a
``segment`` model with the decoder :func:`guess_segment_decoder` names and the
preprocessing such models usually take (Ultralytics: letterbox, ``x / 255``; an 8-bit input:
raw pixels; a person mask: ``x / 255``; other float inputs: DeepLab's ``[-1, 1]``). A
manifest beside the model is still the way to say exactly how to run it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess
from ubiq.models.runtime.backend import Backend
from ubiq.models.runtime.decoders.segment import guess_segment_decoder, score_layout

logger = logging.getLogger(__name__)

__all__ = ["guess_segment_manifest"]


def guess_segment_manifest(
    path: Path, backend: Backend, input_spec: InputSpec
) -> ModelManifest | None:
    """A ``segment`` manifest for ``path`` from its outputs, or ``None`` when none fits."""
    shapes = [t.shape for t in backend.outputs]
    decoder = guess_segment_decoder(shapes, [t.dtype for t in backend.outputs])
    if decoder is None:
        return None
    if input_spec.layout == "NCHW":
        height, width = input_spec.shape[2], input_spec.shape[3]
    else:
        height, width = input_spec.shape[1], input_spec.shape[2]
    if width <= 0 or height <= 0:
        return None  # a dynamic input size needs a manifest
    integer_input = input_spec.dtype in ("uint8", "int8")
    if decoder == "yolo_seg":
        preprocess = Preprocess(width, height, "letterbox", 114, (0.0,) * 3, (255.0,) * 3)
    elif integer_input:
        preprocess = Preprocess(width, height, "stretch", 0, (127.5,) * 3, (127.5,) * 3)
    elif decoder == "mask" and _channels(shapes[0]) in (1, 2):
        preprocess = Preprocess(width, height, "stretch", 0, (0.0,) * 3, (255.0,) * 3)
    else:
        preprocess = Preprocess(width, height, "stretch", 0, (127.5,) * 3, (127.5,) * 3)
    logger.warning(
        "%s has no manifest; guessed segmentation decoder %r from its outputs", path.name, decoder
    )
    return ModelManifest(
        name=path.stem,
        task="segment",
        format=path.suffix.lower().lstrip("."),
        input=input_spec,
        preprocess=preprocess,
        decoder=DecoderSpec(decoder),
        source=str(path),
    )


def _channels(shape) -> int:
    return int(shape[1] if score_layout(shape) == "NCHW" else shape[3])
