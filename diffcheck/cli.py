"""The ``diffcheck`` command line: parse, call the library, map errors to exit codes."""

from __future__ import annotations

import errno
import functools
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from diffcheck import options
from diffcheck.defaults import TIMEOUT
from diffcheck.errors import (
    DiffcheckError,
    ExitCode,
    UsageError,
)
from diffcheck.status import parse_fail_on

#: click's usage error (vendored by newer typers), found through what typer exports
_ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Commands(TyperGroup):
    """Click reports a usage error (unknown option, bad value, extra argument) as a panel
    and exits 2; diffcheck says it in one line and exits 4, as for every usage error."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except _ClickUsageError as e:
            _usage_error(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _ClickUsageError as e:
            _usage_error(e)


def _usage_error(e) -> None:
    where = e.ctx.command_path if e.ctx is not None else "diffcheck"
    if type(e).__name__ == "NoArgsIsHelpError":  # a bare `diffcheck`: its help
        e.exit_code = ExitCode.USAGE
        raise e
    message = " ".join(e.format_message().split())
    _err(f"{where}: {message} (see '{where} --help')")
    raise typer.Exit(ExitCode.USAGE)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    help="Differential verification of sparse-attention index kernels against a pure-torch "
    "reference: exact outputs, no writes outside the regions, on CPU (Triton interpreter) or GPU.",
)


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


#: errors of writing an output that the user fixes (space, permissions, a read-only mount)
_UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
               errno.ENOTDIR, errno.EISDIR, errno.EFBIG}


def exit_codes(command: Callable) -> Callable:
    """Map diffcheck's exceptions to exit codes in one place, for every command."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except DiffcheckError as e:
            _err(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as e:
            if isinstance(e, OSError) and e.errno in _UNWRITABLE:
                # an output that cannot be written (a full device, a read-only file system)
                # is the user's to fix, not a bug of diffcheck's
                _err(f"cannot write {e.filename or 'an output'}: {e.strerror}")
                raise typer.Exit(ExitCode.USAGE) from None
            # a bug in diffcheck itself
            _err(f"internal error: {type(e).__name__}: {e} (set DIFFCHECK_DEBUG=1 for a traceback)")
            if os.environ.get("DIFFCHECK_DEBUG"):
                traceback.print_exc()
            raise typer.Exit(ExitCode.INTERNAL) from None

    return wrapper


def _progress(total: int, enabled: bool):
    """A progress bar on stderr for long runs; silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not enabled or not console.is_terminal,
    )


@app.command()
@exit_codes
def compare(
    path: options.KernelPath = "all",
    impl: options.Impls = None,
    suite: options.Suites = None,
    case_paths: options.CasePaths = None,
    cases: options.Cases = None,
    case: options.CaseGlobs = None,
    mode: options.Mode = "all",
    graph_size: options.GraphSize = None,
    invalid_fill: options.InvalidFill = None,
    report: options.Report = Path("diffcheck-report.csv"),
    seed: options.SuiteSeed = 0,
    max_cases: options.MaxCases = None,
    device: options.Device = "auto",
    fail_on: options.FailOn = "",
    interpreter_check: options.InterpreterCheck = True,
    configs: options.Configs = "all",
    instrument: options.Instrument = None,
    fillings: options.Fillings = 0,
    timeout: options.Timeout = TIMEOUT,
    isolation: options.Isolation = "auto",
    jobs: options.Jobs = 0,
    devices: options.Devices = None,
    details: options.Details = None,
    details_max: options.DetailsMax = 20,
    junit: options.Junit = None,
    summary_md: options.SummaryMd = None,
    shard: options.Shard = "1/1",
    coverage: options.Coverage = None,
    quiet: options.Quiet = False,
) -> None:
    """Run cases x implementations, compare every output element with the reference.

    Exit codes: 0 all passed, 1 some row failed, 2 interrupted, 3 internal error,
    4 usage or input error, 5 nothing selected.
    """
    from diffcheck import session
    from diffcheck.coverage import CoverageOf
    from diffcheck.selection import case_files
    failing = _checked_options(fail_on, invalid_fill, timeout, details_max)
    inputs = case_files([*(cases or []), *(case_paths or [])])
    outputs = session.check_outputs({"--report": report, "--details": details, "--junit": junit,
                                     "--summary-md": summary_md, "--coverage": coverage}, inputs)
    generating = time.perf_counter()
    options = session.RunOptions(
        path=path, impls=impl or [], suites=suite or [], case_files=[str(p) for p in inputs],
        case_patterns=case or [], modes=mode, seed=seed, invalid_fill=invalid_fill,
        max_cases=max_cases, graph_size=graph_size, shard=shard, device=device,
        interpreter_check=interpreter_check, fillings=fillings, timeout=timeout,
        isolation=isolation, workers=jobs, instrument=instrument, configs=configs, devices=devices)
    chosen, settings = session.prepare(options)
    reached = CoverageOf(chosen.jobs(), settings.device.type != "cpu")
    sinks = _sinks(outputs, settings.run_id, failing, details_max, reached)
    started = time.perf_counter()
    typer.echo(_announced(chosen, settings), err=True)
    with _progress(chosen.rows(), enabled=True) as bar:
        task = bar.add_task("comparing", total=chosen.rows())
        result = session.run(chosen, settings, sinks, lambda outcome: bar.advance(task))
    _ended(result, failing, outputs, reached, quiet, settings,
           (time.perf_counter() - started, started - generating))


@app.command()
@exit_codes
def fuzz(
    impl: options.FuzzImpl,
    path: options.FuzzPath = None,
    mode: options.FuzzMode = "auto",
    budget: options.FuzzBudget = "60s",
    seed: options.FuzzSeed = 0,
    shrink_time: options.FuzzShrinkTime = 60.0,
    save_to: options.FuzzSaveTo = Path("fuzz-cases"),
    size: options.FuzzSize = "auto",
    device: options.Device = "auto",
    invalid_fill: options.InvalidFill = None,
    fail_on: options.FailOn = "",
    interpreter_check: options.InterpreterCheck = True,
    configs: options.Configs = "all",
    instrument: options.Instrument = None,
    fillings: options.Fillings = 0,
    timeout: options.Timeout = TIMEOUT,
    isolation: options.Isolation = "auto",
    fast: options.FuzzFast = False,
    mutants: options.FuzzMutants = None,
    devices: options.FuzzDevices = None,
    keep_going: options.FuzzKeepGoing = False,
) -> None:
    """Generate cases (or replay scenarios) against the reference with every check on, stop
    at the first failure or the budget, shrink the failure to a minimal case and save it.

    Exit codes: 0 no failure within the budget, 1 a failure (shrunk and saved, or a saved
    regression case that still fails), 2 interrupted, 3 internal error, 4 usage error.
    """
    given = dict(locals())  # the options, named as FuzzOptions' fields
    from diffcheck import fuzz as fuzzing

    options = fuzzing.FuzzOptions(**given)
    code = fuzzing.run(options, lambda line: typer.echo(line, err=True), typer.echo)
    if code:
        raise typer.Exit(code)


@app.command()
@exit_codes
def call(
    path: options.KernelPath = "all",
    impl: options.CallImpls = None,
    suite: options.CallSuites = None,
    case_paths: options.CasePaths = None,
    cases: options.Cases = None,
    case: options.CaseGlobs = None,
    seed: options.SuiteSeed = 0,
    invalid_fill: options.InvalidFill = None,
    graph_size: options.GraphSize = None,
    device: options.Device = "auto",
    mode: Annotated[str, typer.Option(help="Accepted so a reproduce command can be reused; "
                                      "the call is always one eager call.")] = "eager",
) -> None:
    """Call each selected case once, plainly, for a checker you already trust.

    Every buffer is its own allocation (no red zones, no tags, no interpreter sandbox), so
    `PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck diffcheck call ...`
    or `TRITON_DEBUG=1 diffcheck call ...` sees the kernel's real bounds. Prints one line per
    case (elements checked, mismatched, written outside the regions). Exit codes: 0 all as
    expected, 1 a mismatch, stray write or error, 4 usage error, 5 nothing selected.
    """
    from diffcheck.plain import call_each

    if call_each(path, impl or [], suite or [], [*(cases or []), *(case_paths or [])],
                 case or [], seed, invalid_fill, graph_size, device, mode, typer.echo):
        raise typer.Exit(ExitCode.FAILURES)


def _ended(result, failing, outputs: dict[str, Path], reached, quiet: bool, settings,
           times: tuple[float, float]) -> None:
    """What compare prints once its rows are in, and its exit: a run that did not write every
    row says so (never a pass), then the summary, coverage, the report and the time."""
    from diffcheck import session, tuning
    from diffcheck.report import summarize

    report_line = f"report: {outputs['--report']} ({len(result.rows)} rows)"
    code = result.exit_code(failing)
    if code in (ExitCode.INTERRUPTED, ExitCode.INTERNAL):
        _err(f"{'' if code == ExitCode.INTERRUPTED else 'internal error: the run '}"
             f"{result.ending()}; {report_line}")
        raise typer.Exit(code)
    if not quiet:
        typer.echo(summarize(result.rows, failing))
    for line in reached(result).lines() + tuning.reached_lines(result.heuristics, result.rows):
        typer.echo(line)
    if "--coverage" in outputs:
        reached(result).write_csv(outputs["--coverage"])
    typer.echo(report_line, err=True)
    typer.echo(session.time_breakdown(*times, result.timings,
                          settings.workers if settings.isolation == "process" else 1), err=True)
    if code:
        raise typer.Exit(code)


def _checked_options(fail_on: str, invalid_fill: int | None, timeout: float,
                     details_max: int) -> frozenset:
    """compare's options that need nothing else to be checked, in the order a user reads
    their errors; the statuses that fail the run."""
    from diffcheck.executors import check_fill_and_timeout

    failing = parse_fail_on(fail_on)
    check_fill_and_timeout(invalid_fill, timeout)
    if details_max < 1:
        raise UsageError(f"--details-max must be at least 1, got {details_max}")
    return failing


def _sinks(outputs: dict[str, Path], run_id: str, failing, details_max: int,
           reached) -> list:
    """Where compare's rows go: the CSV report, then each output asked for."""
    from diffcheck.ci_formats import JUnitSink, SummarySink
    from diffcheck.report import DetailsWriter, ReportWriter

    sinks: list = [ReportWriter(outputs["--report"], run_id)]
    if "--details" in outputs:
        sinks.append(DetailsWriter(outputs["--details"], details_max))
    if "--junit" in outputs:
        sinks.append(JUnitSink(outputs["--junit"], failing))
    if "--summary-md" in outputs:
        sinks.append(SummarySink(outputs["--summary-md"], failing, reached))
    return sinks


def _announced(chosen, settings) -> str:
    """The line that opens a run: what it will check, where."""
    from diffcheck import backend

    count = settings.workers
    isolated = (f", in {count} worker process{'es' if count > 1 else ''}"
                if settings.isolation == "process" else ", in this process")
    if settings.devices:
        isolated += f", one per device ({','.join(settings.devices)})"
    return (f"diffcheck: {len(chosen.cases)} cases x {len(chosen.impls)} implementations x "
            f"{len(chosen.modes)} modes = {chosen.rows()} rows on "
            f"{backend.describe(settings.device)}{isolated}")


@app.command("list")
@exit_codes
def list_(
    what: options.ListWhat = "all",
    path: options.ListPath = "all",
    seed: options.ListSeed = 0,
    domain: options.ListDomain = None,
) -> None:
    """Show the kernel paths with their call signatures, the named suites and their cases,
    and the registered implementations; or (--domain PATH) a path's input domain."""
    from diffcheck.listing import lines

    for line in lines(what, path, seed, domain):
        typer.echo(line)


@app.command()
@exit_codes
def export(
    out_dir: options.ExportOutDir,
    suite: options.ExportSuite = "edge",
    path: options.KernelPath = "all",
    seed: options.ExportSeed = 0,
    invalid_fill: options.ExportInvalidFill = None,
    force: options.ExportForce = False,
) -> None:
    """Write a suite's cases as .npz files, to edit, share or replay with --cases.

    A file already there that holds another case (one you edited) is kept unless --force:
    nothing is written then, and the first such file is named."""
    from diffcheck.export import export_suite

    for written in export_suite(out_dir, suite, path, seed, invalid_fill, force):
        typer.echo(str(written))


def main() -> None:
    """Console entry point. A kernel run in this process (``--isolation none``) may have left
    non-daemon threads that would keep it alive after the run: they do not get to. SIGTERM
    (a CI job cancelled, a scheduler's time limit) stops a run as Ctrl-C does: finished rows
    kept, every report marked incomplete, a fuzz finding saved; exit 2."""
    from diffcheck.stops import closing, install_stop_handlers
    from diffcheck.worker import use_fork_server

    install_stop_handlers()
    use_fork_server()  # this process's output stays where it is: workers may fork
    try:
        app()
    except SystemExit as e:
        status = closing(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)
        stray = [t.name for t in threading.enumerate()
                 if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        if not stray:
            raise SystemExit(status) from None
        _err(f"threads left running by a kernel ({', '.join(stray[:3])}) would keep "
             "diffcheck alive; it exits without them")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


report_app = typer.Typer(cls=_Commands, no_args_is_help=True,
                         help="Read saved CSV reports: summarize, regress (the gate), merge.")
app.add_typer(report_app, name="report")


@report_app.command("summarize")
@exit_codes
def report_summarize(
    report: Annotated[Path, typer.Argument(help="A CSV report of `diffcheck compare`.")],
    fail_on: Annotated[str, typer.Option(help="Comma-separated failing statuses.")] = "",
) -> None:
    """Print the markdown summary of a saved report (the same as --summary-md writes)."""
    from diffcheck.ci_formats import markdown_summary
    from diffcheck.regress import load

    rows = load(report)
    typer.echo(markdown_summary(rows, parse_fail_on(fail_on), ending=rows.attrs["incomplete"]),
               nl=False)


@report_app.command("regress")
@exit_codes
def report_regress(
    base: Annotated[Path, typer.Argument(help="Report of the base branch.")],
    head: Annotated[Path, typer.Argument(help="Report of the pull request.")],
) -> None:
    """Rows that got worse, better, or exist in one report only.

    Exit 1 when a row got worse (a more severe status, or more findings with the same failing
    status) or a row only in head fails; else 0.
    """
    from diffcheck.regress import load, regress

    before, after = load(base), load(head)
    for name, rows in (("base", before), ("head", after)):
        if rows.attrs["incomplete"]:  # missing rows would read as checks that vanished
            _err(f"the {name} report {rows.attrs['path']} is from an incomplete run: "
                 f"{rows.attrs['incomplete']}; rerun it")
            raise typer.Exit(ExitCode.FAILURES)
    result = regress(before, after)
    typer.echo(result.describe())
    if result.blocks:
        raise typer.Exit(ExitCode.FAILURES)


@report_app.command("merge")
@exit_codes
def report_merge(
    reports: Annotated[list[Path], typer.Argument(help="Shard reports to join.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The joined CSV.")],
) -> None:
    """Join the reports of `--shard` runs into one (a check in two of them is an error)."""
    from diffcheck.regress import merge_files

    joined = merge_files(reports, output)
    typer.echo(f"{output}: {joined} rows from {len(reports)} reports")


@app.command()
@exit_codes
def show(
    case_file: Annotated[Path, typer.Argument(help="A case or scenario file (.npz).")],
) -> None:
    """Print what a case file holds: sizes, region lengths and well-formedness findings (a
    scenario file: the same for each step)."""
    from diffcheck.casefile import describe_file

    for line in describe_file(case_file):
        typer.echo(line)


@app.command()
@exit_codes
def bench(
    path: options.KernelPath = "all",
    impl: options.BenchImpl = None,
    regime: options.BenchRegime = None,
    rows: options.BenchRows = 512,
    positions: options.BenchPositions = "shuffled",
    k: options.BenchK = 2048,
    q: options.BenchQ = 4,
    device: options.BenchDevice = "auto",
    repeats: options.BenchRepeats = 50,
    warmup: options.BenchWarmup = 5,
    launches: options.BenchLaunches = 20,
    check: options.BenchCheck = True,
    report: options.BenchReport = None,
    sweep: options.BenchSweep = False,
    block_n: options.BenchBlockN = None,
    warps: options.BenchWarps = None,
    column_programs: options.BenchColumnPrograms = None,
    devices: options.BenchDevices = None,
) -> None:
    """Time each implementation (eager, per launch in a graph), the reference and one
    memory-safety check on production shapes; medians, bandwidth, ratios. With --sweep, time
    launch shapes instead (the table behind kernels/rowtile.py's defaults).

    Exit codes: 0 done, 4 usage error or no GPU (pass --device cpu to time the interpreter).
    """
    given = dict(locals())  # the options, named as BenchOptions' fields
    from diffcheck import bench as timing

    timing.run(timing.BenchOptions(**given), lambda line: typer.echo(line, err=True),
               typer.echo)
