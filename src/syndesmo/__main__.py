"""``python -m syndesmo``: the same as the ``syndesmo`` command."""

from syndesmo.cli.app import main

raise SystemExit(main())
