"""ubiq.pipelines: detection (and later tracking, segmentation, speech), runner and sinks."""
