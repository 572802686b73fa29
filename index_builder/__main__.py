"""``python -m index_builder``: see :mod:`index_builder.cli`."""

from index_builder.cli import main

raise SystemExit(main())
