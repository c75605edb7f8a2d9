"""Subcommands of the ``syndesmo`` command line, one module each.

Each module defines ``NAME``, ``HELP`` (one line), ``DESCRIPTION`` (the full help
text with an example), ``add_arguments(parser)`` and ``run(args) -> int``;
``syndesmo.cli.app`` discovers them. Import heavy modules inside ``run``.
"""
