"""Data files shipped with ubiq: the demo photograph (NASA, public domain)."""
