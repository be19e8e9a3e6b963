"""``python -m cbert_core``: the batch command line (see :mod:`cbert_core.corpus.cli`)."""

from cbert_core.corpus.cli import main

raise SystemExit(main())
