"""Task heads and necks assembled onto the backbones (torch side)."""
