"""``python -m example_api``: see :mod:`example_api.cli`."""

from example_api.cli import main

raise SystemExit(main())
