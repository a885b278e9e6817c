"""Makes ``ubiq/data/models/ubiq-embed-mnv2.onnx``: the embedder that ships with ubiq.

It is ``ubiq-det-mnv2``'s MobileNetV2-0.5 trunk (the detector that ships with ubiq) cut at
its last ReLU6, ``(1, 480, 8, 8)`` at 256x256 (features after a ReLU, as the embedders
people use are), followed by global average pooling: 480 values per image, no new
weights, the detector's own preprocessing. ``ubiq learn --embedder ubiq-embed-mnv2``
imprints classes on it. A maintainer runs it once (it needs
``onnx``, the dev extra) and updates the zoo entry's sha256::

    .venv/bin/python scripts/make_ubiq_embed_mnv2.py
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 480
sys.path.insert(0, str(REPO))

TRUNK_OUTPUT = "/backbone/stages.2/stages.2.3/block/block.1/block.1.2/Clip_output_0"
"""The last ReLU6 of ubiq-det-mnv2's MobileNetV2 trunk (its last block's depthwise stage,
before the linear projection), ``(1, 480, 8, 8)`` at 256x256."""


def main() -> int:
    import onnx
    from onnx import helper

    from ubiq.manifest import MANIFEST_METADATA_KEY, DecoderSpec, ModelManifest
    from ubiq.models.runtime.embed import Embedder

    models = REPO / "ubiq" / "data" / "models"
    detector = models / "ubiq-det-mnv2.onnx"
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else models / "ubiq-embed-mnv2.onnx"
    model = onnx.shape_inference.infer_shapes(onnx.load(str(detector)))
    trunk = onnx.utils.Extractor(model).extract_model(["images"], [TRUNK_OUTPUT])
    graph = trunk.graph
    graph.node.extend(
        [
            helper.make_node("GlobalAveragePool", [TRUNK_OUTPUT], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [1, DIM])
    )
    manifest = ModelManifest.load(detector.with_suffix(".json")).with_updates(
        name="ubiq-embed-mnv2",
        task="embed",
        decoder=DecoderSpec("embedding", {"dim": DIM, "backbone": "mobilenet_v2 0.5"}),
        labels=(),
        source=f"ubiq-det-mnv2's trunk (up to {TRUNK_OUTPUT}) + global average pooling, "
        "by scripts/make_ubiq_embed_mnv2.py",
    )
    del trunk.metadata_props[:]
    entry = trunk.metadata_props.add()
    entry.key, entry.value = MANIFEST_METADATA_KEY, manifest.to_json()
    onnx.save(trunk, str(out))
    manifest.save(out.with_suffix(".json"))
    # the trunk of the cut model computes what the detector's trunk computes
    embedder = Embedder.load(out)
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)
    vector = embedder(image)
    assert vector.shape == (DIM,) and np.all(np.isfinite(vector))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    sys.stdout.write(f"{out} ({out.stat().st_size} bytes), sha256 {digest}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
