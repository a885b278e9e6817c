"""``python -m ubiq`` runs the CLI."""

from ubiq.cli import main

raise SystemExit(main())
