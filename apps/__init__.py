"""Ready-made apps a product prototype starts from: ``counter``, ``zone-alert``,
``privacy-cam``; each a small module plus a documented YAML default beside it.

``ubiq run APP`` runs one; ``ubiq.App.from_yaml(...)`` loads one from Python.
"""
