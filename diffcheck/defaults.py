"""Defaults shared by every front end (CLI, API, pytest plugin, reports), declared once so
their help and the reproduce commands cannot drift apart. A leaf: imports nothing."""

#: seconds one job (a case in one mode, all its fillings and configs) may take
TIMEOUT = 60.0
