"""ubiq.models: the runtime (numpy + onnxruntime / LiteRT, never torch) and the model zoo.

The torch side (backbones, heads, train, export, compress) lives in submodules that the
runtime path never imports.
"""
