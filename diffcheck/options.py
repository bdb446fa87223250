"""The command-line options, declared once: those compare, fuzz and call share first, then
each command's own.

Each is a typed alias (``device: options.Device = "auto"``): the help a user reads is the
same in every command that takes it, and tests/test_cli.py checks that every option two
commands share has one help text and one default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffcheck.defaults import FAST_MUTANTS, MAX_LAUNCHES

Device = Annotated[
    str, typer.Option(help="auto (CUDA when present), cpu (Triton interpreter) or cuda.")]

KernelPath = Annotated[str, typer.Option(help="Kernel path (`diffcheck list paths`) or all.")]

Impls = Annotated[
    list[str] | None,
    typer.Option(help="Implementation to check (repeatable): a registered name, module:function "
                 "or file.py:function; default: the ones registered as safe. See `diffcheck "
                 "list`."),
]

CallImpls = Annotated[
    list[str] | None,
    typer.Option(help="Implementation to call (repeatable): a registered name, module:function "
                 "or file.py:function; default: the ones registered as safe."),
]

CallSuites = Annotated[
    list[str] | None,
    typer.Option(help="Named suite (repeatable; `diffcheck list suites` lists them); default "
                 "smoke, domain, domain-replay, stale, replay and glm52, unless --cases is "
                 "given (production-domain, even on a GPU, only when named)."),
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


# -- compare only -------------------------------------------------------------

Mode = Annotated[
    str,
    typer.Option(help="eager (direct call), capture (one call captured into a graph and "
                 "replayed), replay (a scenario's steps replayed under graphs captured on "
                 "its first steps), graph (capture + replay) or all (eager + capture + "
                 "replay)."),
]

Report = Annotated[
    Path, typer.Option(help="CSV report, one row per case x implementation x mode.")
]

MaxCases = Annotated[int | None, typer.Option(help="Run at most this many cases.")]

Devices = Annotated[
    str | None,
    typer.Option(help="Spread the run over several GPUs, one worker process each: all, N (the "
                 "first N) or a list such as 0,2,5 (as this process numbers them); rows merge "
                 "into one report, whose device column names each row's device. On the CPU, "
                 "N workers stand for devices. Not with --jobs or --isolation none."),
]

Jobs = Annotated[
    int,
    typer.Option(help="Worker processes side by side; 0: one per core on a CPU (up to 4), "
                 "one on a GPU."),
]

Details = Annotated[
    Path | None,
    typer.Option(help="Also write a CSV with one row per finding element or access "
                 "(kind, buffer, offset, location, expected, actual)."),
]

DetailsMax = Annotated[
    int, typer.Option(help="Rows of --details per report row at most.")
]

Junit = Annotated[
    Path | None, typer.Option(help="Also write JUnit XML: one test case per report row.")
]

SummaryMd = Annotated[
    Path | None,
    typer.Option(help="Also write a short markdown summary (counts, worst rows with "
                 "reproduce commands; under 64 KiB), e.g. $GITHUB_STEP_SUMMARY."),
]

Shard = Annotated[
    str,
    typer.Option(help="I/N: run only the I-th of N deterministic parts of the selection "
                 "(N CI jobs together cover it; join with `diffcheck report merge`)."),
]

Coverage = Annotated[
    Path | None,
    typer.Option(help="Also write a CSV of the domain partitions the run reached: one "
                 "row per path x mode x partition (`diffcheck list --domain PATH`)."),
]

Quiet = Annotated[bool, typer.Option(help="Print no summary table.")]

# -- fuzz only ----------------------------------------------------------------

FuzzImpl = Annotated[
    str,
    typer.Option(help="Implementation to fuzz: a registered name, module:function or "
                 "file.py:function.", show_default=False),
]

FuzzPath = Annotated[
    str | None,
    typer.Option(help="Kernel path the implementation follows; default a registered "
                 "name's own (path:variant).", show_default=False),
]

FuzzMode = Annotated[
    str,
    typer.Option(help="auto: generated calls (eager) and generated replay scenarios "
                 "(replay) alike, where the path generates scenarios (eager only with "
                 "--fast); eager or capture: generated calls; replay, graph or all: "
                 "generated replay scenarios (a graph captured on a full, dummy or padded "
                 "batch, then real batches), checked in those modes."),
]

FuzzBudget = Annotated[
    str, typer.Option(help="How long to search: a time (60s, 5m, 1h) or a number of "
                      "generated cases (500).")
]

FuzzSeed = Annotated[
    int, typer.Option(help="Seed of the search (the same seed draws the same cases).")]

FuzzShrinkTime = Annotated[
    float, typer.Option(help="Seconds to spend shrinking a failure to a minimal case.")
]

FuzzSaveTo = Annotated[
    Path,
    typer.Option(help="Regression folder: a shrunk failure is saved here as a case or "
                 "scenario file (`compare --cases` replays it), and its saved cases of "
                 "the path run first."),
]

FuzzSize = Annotated[
    str, typer.Option(help="small (a few dozen requests, graphs of 16: the CPU "
                      "interpreter), production (up to 512 requests and graphs of 512) "
                      "or auto: small on the CPU; on a GPU both, in turns of 10 s (small "
                      "draws checked in full under --fast).")
]

FuzzFast = Annotated[
    bool, typer.Option(help="GPU, eager: screen each case with a check captured as one "
                       "graph per case shape; a case it counts anything on, the first "
                       "and every 16th get the full check (which also sees what a replay "
                       "cannot: the launcher's Python).")
]

FuzzMutants = Annotated[
    int | None, typer.Option(help="With --fast: device-made mutants checked per drawn case "
                             "inside its captured graph (odd positions, large slots); the "
                             "first one counted on gets the full check and is shrunk.",
                             show_default=f"{FAST_MUTANTS} with --fast")
]

FuzzDevices = Annotated[
    str | None,
    typer.Option(help="One search per device, side by side: all, N (the first N) or a list "
                 "such as 0,2,5; the i-th listed searches from --seed + i, all save to the "
                 "same --save-to, and the first failure found stops the others (unless "
                 "--keep-going). On the CPU, N searches stand for devices.")
]

FuzzKeepGoing = Annotated[
    bool, typer.Option(help="With --devices: let every search run its budget after one "
                       "finds a failure.")
]

# -- bench only ---------------------------------------------------------------

BenchImpl = Annotated[
    list[str] | None,
    typer.Option(help="Implementation to time (repeatable); default: every registered "
                 "kernel of the path, unguarded included (the ratios compare to it)."),
]

BenchRegime = Annotated[
    list[str] | None, typer.Option(help="Context regime: 4k, 32k, 128k (repeatable).")
]

BenchRows = Annotated[int, typer.Option(help="Output rows of the case (MTP: tokens).")]

BenchPositions = Annotated[
    str, typer.Option(help="Order of a row's top-k positions: shuffled (as a top-k leaves "
                      "them) or ascending (neighbouring lanes share sectors).")
]

BenchK = Annotated[int, typer.Option(help="NUM_TOPK_TOKENS.")]

BenchQ = Annotated[int, typer.Option(help="MTP draft tokens per request.")]

BenchDevices = Annotated[
    str | None,
    typer.Option(help="Time on several GPUs in turn (all, N or a list such as 0,2,5) and "
                 "print each item's median side by side, to spot a slow card; the CSV gets "
                 "a device column. On the CPU, N turns stand for devices.")
]

BenchDevice = Annotated[
    str, typer.Option(help="auto or cuda; cpu times the Triton interpreter (only when "
                      "asked for: not a GPU speed).")
]

BenchRepeats = Annotated[int, typer.Option(help="Timed repeats per item.")]

BenchWarmup = Annotated[int, typer.Option(help="Untimed calls before timing.")]

BenchLaunches = Annotated[
    int, typer.Option(help=f"Launches captured in one graph (at most {MAX_LAUNCHES}).")]

BenchCheck = Annotated[
    bool, typer.Option(help="Also time one full memory-safety check of each case.")
]

BenchReport = Annotated[Path | None, typer.Option(help="Also write the table as CSV.")]

BenchSweep = Annotated[
    bool, typer.Option(help="Instead, time every launch shape (BLOCK_N x warps x column "
                       "programs) of each kernel in a graph, checking each one's output.")
]

BenchBlockN = Annotated[
    list[int] | None, typer.Option(help="Sweep: tile widths (default 128..2048).")
]

BenchWarps = Annotated[
    list[int] | None, typer.Option(help="Sweep: num_warps values (default 1, 2, 4, 8).")
]

BenchColumnPrograms = Annotated[
    list[int] | None, typer.Option(help="Sweep: programs per row across its columns "
                                   "(default 1, 2, 4, 8, 16).")
]

# -- list only ----------------------------------------------------------------

ListWhat = Annotated[
    str, typer.Argument(help="paths, suites, cases or implementations (default: paths, "
                        "suites and implementations).")
]

ListPath = Annotated[str, typer.Option(help="Only this path (`all`: every path).")]

ListSeed = Annotated[int, typer.Option(help="Seed the listed cases are generated with.")]

ListDomain = Annotated[
    str | None,
    typer.Option(help="Show this path's declared domain instead: every dimension, its "
                 "partitions and how a generated batch reaches each."),
]

# -- export only --------------------------------------------------------------

ExportOutDir = Annotated[Path, typer.Argument(help="Folder to write the .npz case files into.")]

ExportSuite = Annotated[
    str, typer.Option(help="Suite to export (of a scenario suite: every step).")
]

ExportSeed = Annotated[int, typer.Option(help="Seed of the generated suite.")]

ExportInvalidFill = Annotated[
    int | None, typer.Option(help="Fill value stored in the cases (default: each path's "
                             "contract's own).")
]

ExportForce = Annotated[
    bool, typer.Option(help="Overwrite files in the folder that hold other cases.")
]
