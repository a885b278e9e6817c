"""Geometry and rules on tracked objects: lines, zones, counting, dwell, intrusion."""
