"""Efficient backbones (torch side, never imported by the runtime)."""
