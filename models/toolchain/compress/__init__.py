"""Compression hooks: prune, distill, quantize, measure, gate (host side)."""
