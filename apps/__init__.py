"""ubiq.apps: ready-made apps configured by YAML (people counter, zone alert, ...)."""
