"""What `diffcheck list` prints: the kernel paths with their call signatures, the named suites
and their cases, the registered implementations, or one path's declared domain."""

from __future__ import annotations

from collections.abc import Iterator

from diffcheck.errors import UsageError

#: what `diffcheck list` can show
LISTINGS = ("all", "paths", "suites", "cases", "implementations")


def lines(what: str, path: str, seed: int, domain: str | None = None) -> Iterator[str]:
    """The listing's lines, in order."""
    from diffcheck.impls import builtin
    from diffcheck.paths import get_path, select_paths

    if domain is not None:
        from diffcheck.domain import describe, domain_of

        yield from describe(domain_of(get_path(domain)))
        return
    if what not in LISTINGS:
        raise UsageError(f"unknown listing '{what}'; known: {', '.join(LISTINGS[1:])}")
    specs = select_paths(path)
    if what in ("all", "paths"):
        for spec in specs:
            yield f"path  {spec.name:<11} {spec.summary}"
            yield f"  call: {signature_of(spec)}"
            if what == "paths":
                yield from _call_lines(spec)
    if what in ("all", "suites", "cases"):
        for spec in specs:
            yield from _suite_lines(spec, what == "cases", seed)
    if what in ("all", "implementations"):
        names = {spec.name for spec in specs}
        for implementation in builtin().values():
            if implementation.path in names:
                safety = "safe" if implementation.safe else "UNSAFE"
                yield (f"impl  {implementation.name:<20} {safety:<6} "
                       f"{implementation.summary}")


def _call_lines(spec) -> Iterator[str]:
    """Each tensor and scalar of a path's call, with what it holds."""
    for tensor in spec.tensors:
        yield f"    {tensor.name:<18} {tensor.doc}"
    for scalar in spec.scalars:
        named = "/".join(scalar.keywords) or f"({scalar.name})"
        yield f"    {named:<18} {scalar.doc} (default {scalar.default})"
    yield f"    {'fill':<18} value of an invalid entry (default {spec.fill})"


def _suite_lines(spec, cases: bool, seed: int):
    """A path's suites, one line each, and (``cases``) every case of each."""
    for name, builder in spec.suites().items():
        scenarios = builder.scenarios
        kind = "scenarios (replay)" if scenarios else "cases"
        yield f"suite {name:<17} {spec.name:<11} {len(builder.names)} {kind}"
        if cases and builder.gpu_sized:
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
