"""The command-line options that compare, fuzz and call share, declared once.

Each is a typed alias (``device: options.Device = "auto"``): the help a user reads is the
same in every command that takes it, and tests/test_cli.py checks that every option two
commands share has one help text and one default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Device = Annotated[
    str, typer.Option(help="auto (CUDA when present), cpu (Triton interpreter) or cuda.")]

KernelPath = Annotated[str, typer.Option(help="Kernel path (`diffcheck list paths`) or all.")]

Impls = Annotated[
    list[str] | None,
    typer.Option(help="Implementation to check (repeatable): a registered name, module:function "
                 "or file.py:function; default: the ones registered as safe. See `diffcheck "
                 "list`."),
]

Suites = Annotated[
    list[str] | None,
    typer.Option(help="Named suite (repeatable; `diffcheck list suites` lists them); default "
                 "smoke, domain, domain-replay, stale, replay and glm52, and production-domain "
                 "on a GPU, unless --cases is given."),
]

CasePaths = Annotated[
    list[Path] | None,
    typer.Argument(help="Stored case files (.npz) or folders of them, like --cases.",
                   show_default=False),
]

Cases = Annotated[
    list[Path] | None,
    typer.Option(help="Stored case file .npz, or a folder of them (repeatable; more files may "
                 "follow: --cases a.npz b.npz)."),
]

CaseGlobs = Annotated[
    list[str] | None,
    typer.Option(help="Only cases whose id (suite/name) or name matches this glob "
                 "(repeatable)."),
]

SuiteSeed = Annotated[int, typer.Option(help="Seed of the generated suites.")]

GraphSize = Annotated[
    int | None,
    typer.Option(help="Graph size (output rows) of the replay scenarios; default each "
                 "scenario's own (16 to 24 rows, 512 in production-replay)."),
]

InvalidFill = Annotated[
    int | None,
    typer.Option(help="Value for invalid entries: 0 (ATOM) or -1 (vLLM/SGLang); default each "
                 "path's contract's own (`diffcheck list paths`). Overrides the fill stored in "
                 "--cases files."),
]

FailOn = Annotated[
    str,
    typer.Option(help="Comma-separated statuses that fail the run (exit 1), e.g. "
                 "mismatch,oob_read.",
                 show_default="divergence and everything more severe"),
]

InterpreterCheck = Annotated[
    bool,
    typer.Option(help="On CPU, bounds-check every load and store of the Triton interpreter "
                 "(an access outside every tensor is recorded and neutralised)."),
]

Configs = Annotated[
    str,
    typer.Option(help="Configs of an autotuned kernel (@triton.autotune) each row runs under: "
                 "all, first, or a number N (the first N). Each row keeps its worst verdict "
                 "and names that config in the `config` column."),
]

Instrument = Annotated[
    bool | None,
    typer.Option("--instrument/--no-instrument",
                 help="Launch instrumented copies of the Triton kernels, which check the "
                 "address of their own every load, store and atomic against the tensors the "
                 "launch was given (an out-of-bounds lane is recorded and masked off); on a "
                 "GPU this finds the reads red zones cannot (one the kernel bounds "
                 "afterwards). On CPU it needs --no-interpreter-check.",
                 show_default="on a GPU, off on CPU"),
]

Fillings = Annotated[
    int,
    typer.Option(help="Red-zone fillings per case: 2 runs each case with constant and with "
                 "tagged margins to find out-of-bounds reads; 4 adds two plausible fillings "
                 "(values a kernel's own checks accept, to see reads that never reach the "
                 "output otherwise); 1 runs it once; 0: 4 on a GPU or with "
                 "--no-interpreter-check, 2 under the interpreter sandbox."),
]

Timeout = Annotated[
    float,
    typer.Option(help="Seconds one case may take (all its fillings) before it ends as "
                 "`timeout` and the run goes on; 0 for no limit."),
]

Isolation = Annotated[
    str,
    typer.Option(help="Where kernels run: process (worker processes, replaced after a fault, "
                 "crash, time-out or leftover threads; a kernel that ends its process is a "
                 "fault row), none (this process: for debugging, a kernel can end the run), "
                 "auto: process."),
]
