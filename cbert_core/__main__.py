"""``python -m cbert_core``: the batch command line (see :mod:`cbert_core.cli`)."""

from .cli import main

raise SystemExit(main())
