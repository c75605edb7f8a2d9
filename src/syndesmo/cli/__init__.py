"""The command line: parse, call one workflow, write its output (``app``, ``commands``)."""
