"""Which events are alerts: the kinds that get a snapshot and a clip unless told otherwise.

A module of its own, importing nothing, so the CLI can read it to build its parser
before OpenCV is configured.
"""

DEFAULT_CLIP_KINDS = ("zone.intrusion", "zone.dwell", "line.cross", "alert.*")
"""Event kinds (``fnmatch`` patterns) that get a snapshot and a clip by default."""
