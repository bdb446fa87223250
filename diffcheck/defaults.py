"""Defaults shared by every front end (CLI, API, pytest plugin, reports), declared once so
their help and the reproduce commands cannot drift apart. A leaf: imports nothing."""

#: seconds one job (a case in one mode, all its fillings and configs) may take
TIMEOUT = 60.0

#: device mutants per drawn case under fuzz --fast: enough that drawing a production-size
#: case on the host (0.1-0.3 s) is a small part of the run
FAST_MUTANTS = 2048

#: the most launches `bench` captures into one graph (each keeps its own arguments)
MAX_LAUNCHES = 1024

#: input elements of the cases a worker keeps built between jobs (the latest one it keeps
#: whatever its size); a larger case runs for every implementation in a row instead
CASE_ELEMENTS_KEPT = 1 << 26
