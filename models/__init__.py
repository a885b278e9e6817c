"""ubiq.models, in two sides you can tell apart by folder:

- the device side, never importing torch: ``runtime/`` (backends, preprocessing, decoders,
  a runtime class per task, ``load_model``, metrics and evaluation that ``ubiq val``
  uses), ``zoo/`` (manifests, sources, cache) and ``datasets/`` (readers and generators of
  YOLO, image-folder and keyword sets);
- ``toolchain/``, the torch side for a host: ``nets``, ``backbones``, ``heads``,
  ``train``, ``export`` and ``compress``. The runtime path never imports it.
"""
