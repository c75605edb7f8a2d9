"""``python -m syndesmo``: the same as the ``syndesmo`` command."""

from syndesmo.cli import main

raise SystemExit(main())
