"""Multi-object tracking: a ByteTrack-class tracker in numpy (:mod:`.tracker`), its
pipeline stage (:mod:`.stage`), MOTChallenge files (:mod:`.mot`), evaluation
(:mod:`.evaluate`) and a generator of pedestrian sequences (:mod:`.synthetic`).

Importing this package imports nothing heavy (the CLI reads :data:`TRACKERS` to build its
parser before OpenCV is configured).
"""

TRACKERS = ("bytetrack", "sort")
"""Presets: ``bytetrack`` (two-stage association, see :mod:`.tracker`), ``sort`` (one
association of confident boxes, no low-score stage, no recovery, no camera motion)."""
