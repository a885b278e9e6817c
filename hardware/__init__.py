"""ubiq.hardware: video and audio sources, accelerators and the platform probe.

Nothing here probes hardware at import time.
"""
