"""The ``diffcheck`` command line: parse, call the library, map errors to exit codes."""

from __future__ import annotations

import errno
import functools
import os
import signal
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

    failing = _fail_on(fail_on)
    if details_max < 1:
        raise UsageError(f"--details-max must be at least 1, got {details_max}")
    inputs = case_files([*(cases or []), *(case_paths or [])])
    outputs = session.check_outputs({"--report": report, "--details": details,
                                     "--junit": junit, "--summary-md": summary_md,
                                     "--coverage": coverage}, inputs)
    generating = time.perf_counter()
    options = session.RunOptions(
        path=path, impls=impl or [], suites=suite or [], case_files=[str(p) for p in inputs],
        case_patterns=case or [], modes=mode, seed=seed, invalid_fill=invalid_fill,
        max_cases=max_cases, graph_size=graph_size, shard=shard, device=device,
        interpreter_check=interpreter_check, fillings=fillings, timeout=timeout,
        isolation=isolation, workers=jobs, instrument=instrument, configs=configs)
    chosen, settings = session.prepare(options)
    reached = CoverageOf(chosen.jobs(), settings.device.type != "cpu")
    sinks = _sinks(outputs, settings.run_id, failing, details_max, reached)
    started = time.perf_counter()
    total = chosen.rows()
    typer.echo(_announced(chosen, settings), err=True)
    with _progress(total, enabled=True) as bar:
        task = bar.add_task("comparing", total=total)
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
) -> None:
    """Generate cases (or replay scenarios) against the reference with every check on, stop
    at the first failure or the budget, shrink the failure to a minimal case and save it.

    Exit codes: 0 no failure within the budget, 1 a failure (shrunk and saved, or a saved
    regression case that still fails), 2 interrupted, 3 internal error, 4 usage error.
    """
    from diffcheck import fuzz as fuzzing

    options = fuzzing.FuzzOptions(
        impl=impl, path=path, mode=mode, budget=budget, seed=seed, shrink_time=shrink_time,
        save_to=save_to, size=size, device=device, invalid_fill=invalid_fill, fail_on=fail_on,
        interpreter_check=interpreter_check, configs=configs, instrument=instrument,
        fillings=fillings, timeout=timeout, isolation=isolation, fast=fast, mutants=mutants)
    code = fuzzing.run(options, lambda line: typer.echo(line, err=True), typer.echo)
    if code:
        raise typer.Exit(code)


@app.command()
@exit_codes
def call(
    path: options.KernelPath = "all",
    impl: options.Impls = None,
    suite: options.Suites = None,
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
    from diffcheck import backend, modes
    from diffcheck.executors import settings_for
    from diffcheck.plain import call_plainly
    from diffcheck.selection import case_files, select

    if invalid_fill not in (None, 0, -1):
        raise UsageError(f"--invalid-fill must be 0 or -1, got {invalid_fill}")
    modes.select(mode)  # an unknown mode is still a usage error
    dev = backend.resolve(device)
    backend.prepare(dev)
    inputs = case_files([*(cases or []), *(case_paths or [])])
    chosen = select(path, impl or [], suite or [], [str(p) for p in inputs], case or [],
                    modes.select("eager"), seed, invalid_fill, None, graph_size)
    settings = settings_for(chosen.impls, dev, seed, invalid_fill, interpreter_check=False,
                            isolation="none")
    failed = False
    with backend.interpreter_as_on_gpu(dev):
        for job in chosen.jobs():
            for row_case in job.mode.rows(job.case):
                result = call_plainly(job, row_case, settings)
                typer.echo(result.line())
                failed |= result.failed
    if failed:
        raise typer.Exit(ExitCode.FAILURES)


def _ended(result, failing, outputs: dict[str, Path], reached, quiet: bool, settings,
           times: tuple[float, float]) -> None:
    """What compare prints once its rows are in, and its exit: a run that did not write every
    row says so (never a pass), then the summary, coverage, the report and the time."""
    from diffcheck import tuning
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
    typer.echo(_breakdown(*times, result.timings,
                          settings.workers if settings.isolation == "process" else 1), err=True)
    if code:
        raise typer.Exit(code)


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
    return (f"diffcheck: {len(chosen.cases)} cases x {len(chosen.impls)} implementations x "
            f"{len(chosen.modes)} modes = {chosen.rows()} rows on "
            f"{backend.describe(settings.device)}{isolated}")


def _fail_on(text: str):
    from diffcheck.status import parse_fail_on

    return parse_fail_on(text)


def _breakdown(wall: float, generation: float, timings: list[tuple[str, dict]],
               workers: int = 1) -> str:
    """Where the time went: case generation, worker start, calls (first calls compile),
    references, staging and checks, and what is left (messages to workers, reports). With
    several workers the parts are summed over them, and only the wall time is the run's."""
    import statistics

    def total(key: str) -> float:
        return sum(t.get(key, 0.0) for _, t in timings)

    calls, references, jobs = total("calls"), total("references"), total("total")
    cases, starting = total("cases"), total("worker_start")
    first_extra = 0.0
    for name in {n for n, _ in timings}:
        mine = [t["calls"] for n, t in timings if n == name]
        first_extra += max(mine[0] - statistics.median(mine), 0.0)
    started = (f"worker start {starting:.1f} s, cases rebuilt in the workers {cases:.1f} s, "
               if starting or cases else "")
    summed = f" (summed over {workers} workers)" if workers > 1 else ""
    other = "" if workers > 1 else (
        f", other (messages, reports) {max(wall - jobs - cases - starting, 0.0):.1f} s")
    return (f"time: {generation:.1f} s building cases, {wall:.1f} s running{summed}: "
            f"{started}implementation calls {calls:.1f} s (first calls, compiling included, "
            f"{first_extra:.1f} s more than typical), references {references:.1f} s, staging "
            f"and checks {max(jobs - calls - references, 0.0):.1f} s{other}")


@app.command("list")
@exit_codes
def list_(
    what: Annotated[
        str, typer.Argument(help="paths, suites, cases or implementations (default: paths, "
                            "suites and implementations).")
    ] = "all",
    path: Annotated[str, typer.Option(help="Only this path (`all`: every path).")] = "all",
    seed: Annotated[int, typer.Option(help="Seed the listed cases are generated with.")] = 0,
    domain: Annotated[
        str | None,
        typer.Option(help="Show this path's declared domain instead: every dimension, its "
                     "partitions and how a generated batch reaches each."),
    ] = None,
) -> None:
    """Show the kernel paths with their call signatures, the named suites and their cases,
    and the registered implementations; or (--domain PATH) a path's input domain."""
    from diffcheck.impls import builtin
    from diffcheck.paths import get_path, select_paths

    if domain is not None:
        from diffcheck.domain import describe, domain_of

        for line in describe(domain_of(get_path(domain))):
            typer.echo(line)
        return

    listings = ("all", "paths", "suites", "cases", "implementations")
    if what not in listings:
        raise UsageError(f"unknown listing '{what}'; known: {', '.join(listings[1:])}")
    specs = select_paths(path)
    if what in ("all", "paths"):
        for spec in specs:
            typer.echo(f"path  {spec.name:<11} {spec.summary}")
            typer.echo(f"  call: {signature_of(spec)}")
            if what == "paths":
                for tensor in spec.tensors:
                    typer.echo(f"    {tensor.name:<18} {tensor.doc}")
                for scalar in spec.scalars:
                    named = "/".join(scalar.keywords) or f"({scalar.name})"
                    typer.echo(f"    {named:<18} {scalar.doc} (default {scalar.default})")
                typer.echo(f"    {'fill':<18} value of an invalid entry (default {spec.fill})")
    if what in ("all", "suites", "cases"):
        for spec in specs:
            for line in _suite_lines(spec, what == "cases", seed):
                typer.echo(line)
    if what in ("all", "implementations"):
        names = {spec.name for spec in specs}
        for implementation in builtin().values():
            if implementation.path in names:
                safety = "safe" if implementation.safe else "UNSAFE"
                typer.echo(f"impl  {implementation.name:<20} {safety:<6} "
                           f"{implementation.summary}")


def _suite_lines(spec, cases: bool, seed: int):
    """A path's suites, one line each, and (``cases``) every case of each."""
    for name, builder in spec.suites().items():
        scenarios = getattr(builder, "scenarios", False)
        kind = "scenarios (replay)" if scenarios else "cases"
        yield f"suite {name:<17} {spec.name:<11} {len(builder.names)} {kind}"
        if cases and getattr(builder, "gpu_sized", False):
            for name in builder.names:  # gigabytes each: named, not built
                yield f"  {name:<40} (GPU-sized: built when run)"
        elif cases:
            for c in builder(seed, spec.fill):
                if not scenarios:
                    yield f"  {c.case_id:<40} K={c.k:<5} {c.description}"
                    continue
                yield f"  {c.case_id:<40} {len(c.steps)} steps: {c.description}"
                for step in c.steps:
                    yield f"    {step.case_id}{'' if step.well_formed else ' (malformed)'}"


def signature_of(spec) -> str:
    """A path's call as an engine writes it."""
    words = [*spec.positional]
    words += [f"{scalar.keywords[0]}={'None' if scalar.omit_default else scalar.default}"
              for scalar in spec.scalars if scalar.keywords]
    words += [f"{spec.k_keyword}=K", f"{spec.out_keyword}=None"]
    words += [f"{tensor.name}=None" for tensor in spec.tensors if tensor.keyword]
    returns = "out" if spec.out_layout == "flat" else "out [rows, K]"
    return f"({', '.join(words)}) -> {returns}"


@app.command()
@exit_codes
def export(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the .npz case files into.")],
    suite: Annotated[
        str, typer.Option(help="Suite to export (of a scenario suite: every step).")
    ] = "edge",
    path: Annotated[str, typer.Option(help="Kernel path (`diffcheck list paths`) or all.")
                    ] = "all",
    seed: Annotated[int, typer.Option(help="Seed of the generated suite.")] = 0,
    invalid_fill: Annotated[
        int | None, typer.Option(help="Fill value stored in the cases (default: each path's "
                                 "contract's own).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Overwrite files in the folder that hold other cases.")
    ] = False,
) -> None:
    """Write a suite's cases as .npz files, to edit, share or replay with --cases.

    A file already there that holds another case (one you edited) is kept unless --force:
    nothing is written then, and the first such file is named."""
    from diffcheck import session
    from diffcheck.casefile import save_case
    from diffcheck.paths import select_paths
    from diffcheck.selection import build_suites

    folder = session.check_folder("DIR", out_dir)
    paths = [spec.name for spec in select_paths(path)]
    from diffcheck.case import Scenario

    staged: list[tuple[Path, Path]] = []
    try:
        for target in build_suites(paths, [suite], seed, invalid_fill):
            # a scenario's steps are written one by one (they replay as single cases)
            for c in target.steps if isinstance(target, Scenario) else [target]:
                final = folder / f"{c.suite}-{c.name.replace('/', '-')}.npz"
                temporary = folder / f".{final.stem}.{os.getpid()}.tmp.npz"
                folder.mkdir(parents=True, exist_ok=True)
                staged.append((save_case(c, temporary), final))
        changed = [final for temporary, final in staged
                   if final.exists() and not _same_archive(temporary, final)]
        if changed and not force:
            raise UsageError(f"{changed[0]} holds another case (edited?); {len(changed)} "
                             "such file(s) in the folder: nothing written; pass --force to "
                             "overwrite them or export into another folder")
        for temporary, final in staged:
            os.replace(temporary, final)
            typer.echo(str(final))
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def _same_archive(a: Path, b: Path) -> bool:
    """Two .npz files hold the same members, byte for byte (their zip dates may differ)."""
    import zipfile

    try:
        with zipfile.ZipFile(a) as x, zipfile.ZipFile(b) as y:
            names = sorted(x.namelist())
            return names == sorted(y.namelist()) and all(x.read(n) == y.read(n) for n in names)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


#: the stop the handlers below raised last, and how many they raised: only that one is sent
#: again when swallowed (a kernel's own KeyboardInterrupt in a ``__del__`` is not a stop)
_STOPS: dict[str, object] = {"raised": None, "count": 0}


def _stop(signum, frame) -> None:
    """SIGTERM (a CI job cancelled, a scheduler's limit) and Ctrl-C stop a run alike."""
    stop = KeyboardInterrupt("terminated (SIGTERM)") if signum == signal.SIGTERM else \
        KeyboardInterrupt()
    _STOPS["raised"], _STOPS["count"] = stop, _STOPS["count"] + 1
    raise stop


def _stop_again(previous: Callable) -> Callable:
    """An unraisable-exception hook that does not lose a stop. Ctrl-C or SIGTERM raised
    where Python ignores exceptions (a garbage-collector callback, a ``__del__``) would be
    printed and forgotten, and the run would go on to exit 1 or 0; the signal is sent again
    from a moment later, when it lands where it stops the run (unless another stop came
    meanwhile)."""

    def hook(unraisable) -> None:
        stop = unraisable.exc_value
        if stop is None or stop is not _STOPS["raised"]:
            previous(unraisable)
            return
        signum = signal.SIGTERM if "SIGTERM" in str(stop) else signal.SIGINT
        count = _STOPS["count"]

        def again() -> None:
            if _STOPS["count"] == count:  # no stop landed since
                os.kill(os.getpid(), signum)

        timer = threading.Timer(0.01, again)
        timer.daemon = True
        timer.start()
    return hook


def install_stop_handlers() -> None:
    """SIGTERM stops a run as Ctrl-C does, and neither is lost where exceptions are ignored."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.unraisablehook = _stop_again(sys.unraisablehook)


def main() -> None:
    """Console entry point. A kernel run in this process (``--isolation none``) may have left
    non-daemon threads that would keep it alive after the run: they do not get to. SIGTERM
    (a CI job cancelled, a scheduler's time limit) stops a run as Ctrl-C does: finished rows
    kept, every report marked incomplete, a fuzz finding saved; exit 2."""
    install_stop_handlers()
    try:
        app()
    except SystemExit as e:
        stray = [t.name for t in threading.enumerate()
                 if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        if not stray:
            raise
        _err(f"threads left running by a kernel ({', '.join(stray[:3])}) would keep "
             "diffcheck alive; it exits without them")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)


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
    typer.echo(markdown_summary(rows, _fail_on(fail_on), ending=rows.attrs["incomplete"]),
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
    from diffcheck import session
    from diffcheck.files import replacing
    from diffcheck.regress import load, merge
    from diffcheck.report import COLUMNS

    where = session.check_outputs({"-o": output}, reports)["-o"]
    shards = [load(r) for r in reports]
    for rows in shards:
        lacking = [c for c in COLUMNS if c not in rows.columns]
        if lacking:  # the joined file would be one `report summarize` refuses
            raise UsageError(f"{rows.attrs['path']} lacks the report columns "
                             f"{', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''}; "
                             "merge reports written by diffcheck compare")
        if rows.attrs["incomplete"]:
            raise UsageError(f"{rows.attrs['path']} is from an incomplete run: "
                             f"{rows.attrs['incomplete']}; rerun that shard before merging")
    joined = merge(shards)
    with replacing(where) as partial:  # a failed write never leaves half a report
        joined.to_csv(partial, index=False)
    typer.echo(f"{output}: {len(joined)} rows from {len(reports)} reports")


@app.command()
@exit_codes
def show(
    case_file: Annotated[Path, typer.Argument(help="A case or scenario file (.npz).")],
) -> None:
    """Print what a case file holds: sizes, region lengths and well-formedness findings (a
    scenario file: the same for each step)."""
    from diffcheck.case import Scenario
    from diffcheck.casefile import describe_case, load_any

    target = load_any(case_file, validate=False)
    if not isinstance(target, Scenario):
        typer.echo(describe_case(target))
        return
    typer.echo(f"{target.case_id}: replay scenario of path {target.path}, {len(target.steps)} "
               f"steps on graphs of {sorted(set(target.sizes))} rows")
    if target.description:
        typer.echo(f"  {target.description}")
    for step, size in zip(target.steps, target.sizes, strict=True):
        typer.echo(f"step on a graph of {size}: " + describe_case(step))


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
) -> None:
    """Time each implementation (eager, per launch in a graph), the reference and one
    memory-safety check on production shapes; medians, bandwidth, ratios. With --sweep, time
    launch shapes instead (the table behind kernels/rowtile.py's defaults).

    Exit codes: 0 done, 4 usage error or no GPU (pass --device cpu to time the interpreter).
    """
    from diffcheck import bench as timing

    timing.run(timing.BenchOptions(
        path=path, impl=impl, regime=regime, rows=rows, positions=positions, k=k, q=q,
        device=device, repeats=repeats, warmup=warmup, launches=launches, check=check,
        report=report, sweep=sweep, block_n=block_n, warps=warps,
        column_programs=column_programs), lambda line: typer.echo(line, err=True), typer.echo)
