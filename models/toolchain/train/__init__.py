"""Training loops, losses and metrics (torch side)."""
