"""Training sets made of real photographs, and readers for YOLO and image-folder layouts.

- :mod:`~ubiq.models.datasets.photos`: objects cut out of scikit-image's bundled
  photographs (cat, cup, rocket, motorcycle, astronaut, coin) and background photos.
- :mod:`~ubiq.models.datasets.synth`: :func:`generate_detection_set` composites them into
  an Ultralytics-style YOLO detection set with exact boxes and semantic masks.
- :mod:`~ubiq.models.datasets.yolo`: :func:`load_yolo_split` reads and validates a YOLO
  set; writers for labels and ``data.yaml``; a preview grid.
- :mod:`~ubiq.models.datasets.classify`: handwritten digits and LFW faces as image
  folders, and :func:`load_image_folder`.

numpy, OpenCV and scikit-image only: importing this package never imports torch, and
imports none of its modules until they are used.
"""
