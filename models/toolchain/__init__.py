"""The torch toolchain (host side): network builders, backbones, heads, training, export and
compression. Never imported by the runtime path (``ubiq detect`` on a device runs with
numpy, OpenCV and onnxruntime or LiteRT alone); install it with ``pip install 'ubiq[train]'``.
"""
