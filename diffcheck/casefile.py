"""Case files: a case stored as ``.npz`` (``allow_pickle=False``), validated on load.

Arrays ``inputs/<name>`` and ``intended/<name>`` and a JSON ``meta`` entry. Loading checks
every array's header before reading it, every meta field's type, the path's tensor schema and
its contract, and reports every problem as one line that says what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from diffcheck.buffers import margin_for
from diffcheck.case import Case, Scenario
from diffcheck.errors import CaseFileError
from diffcheck.files import replacing
from diffcheck.paths import PathSpec, get_path, known_paths

FORMAT_VERSION = 2


def schema_problems(case: Case, spec: PathSpec) -> list[str]:
    """Names, dtypes and dimensions of every tensor set of a case."""
    problems = []
    sets = {"inputs": case.inputs}
    if case.intended is not None:
        sets["intended"] = case.intended
    for label, tensors in sets.items():
        missing = [n for n in spec.names if n not in tensors]
        extra = [n for n in tensors if n not in spec.names]
        if missing:
            problems.append(f"{label} lack {', '.join(missing)} (a {spec.name} case needs "
                            f"{', '.join(spec.names)})")
        if extra:
            problems.append(f"{label} hold unknown tensors {', '.join(extra)}")
        for name in spec.names:
            t = tensors.get(name)
            if t is None:
                continue
            where = name if label == "inputs" else f"intended {name}"
            if t.dtype != torch.int32:
                problems.append(f"{where} is {str(t.dtype).replace('torch.', '')}, expected int32 "
                                f"(save with .to(torch.int32))")
            if t.dim() != spec.ndim(name):
                problems.append(f"{where} has {t.dim()} dimensions, expected {spec.ndim(name)}")
    for name, cols in case.columns.items():
        if name not in spec.matrices:
            problems.append(f"columns names {name}, which is not a 2-D tensor of {spec.name}")
        elif name in case.inputs and not 0 < cols <= case.inputs[name].shape[-1]:
            problems.append(f"columns[{name}] = {cols} does not fit its buffer "
                            f"of width {case.inputs[name].shape[-1]}")
    if case.k <= 0:
        problems.append(f"K is {case.k}, expected a positive number of top-k columns")
    return problems + spec.scalar_problems(case.scalars)


def case_problems(case: Case) -> list[str]:
    """Everything wrong with a case: schema first, then the intended batch's contract."""
    spec = get_path(case.path)
    problems = schema_problems(case, spec)
    if problems:
        return problems
    label = "intended batch" if case.intended is not None else "batch"
    return [f"{label}: {p}" for p in spec.violations_of(case.intended_inputs(), case.k,
                                                        case.scalars)]


def save_case(case: Case, path: str | Path) -> Path:
    """Write ``case`` as an ``.npz`` file that loads without pickle."""
    path = Path(path)
    arrays = {f"inputs/{n}": t.detach().cpu().contiguous().numpy() for n, t in case.inputs.items()}
    if case.intended is not None:
        arrays.update({f"intended/{n}": t.detach().cpu().contiguous().numpy()
                       for n, t in case.intended.items()})
    meta = {
        "format": FORMAT_VERSION, "path": case.path, "name": case.name, "suite": case.suite,
        "k": case.k, "fill": case.fill, "seed": case.seed, "description": case.description,
        "columns": case.columns, "fill_swapped": case.fill_swapped, "scalars": case.scalars,
        "without_out": case.without_out, "stale": list(case.stale),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    return _write(path, arrays)


#: the most elements a case file may declare, all arrays together (2^28 int32: 1 GiB);
#: the environment variable DIFFCHECK_MAX_ELEMENTS changes it
MAX_ELEMENTS = 1 << 28
#: the longest 'meta' entry (characters)
MAX_META = 1 << 20


def max_elements() -> int:
    """The case size limit: DIFFCHECK_MAX_ELEMENTS when set, else MAX_ELEMENTS."""
    text = os.environ.get("DIFFCHECK_MAX_ELEMENTS", "")
    try:
        return int(text) if text else MAX_ELEMENTS
    except ValueError:
        raise CaseFileError(f"DIFFCHECK_MAX_ELEMENTS={text!r} is not a whole number") from None


def _read_arrays(path: Path, fail) -> dict[str, np.ndarray]:
    """Every array of an .npz file, each header checked before its data is read: integer
    arrays (and one text 'meta') whose declared sizes stay within the limit, so a small file
    cannot expand to gigabytes."""
    limit = max_elements()
    try:
        with zipfile.ZipFile(path) as archive:
            declared = 0
            names: set[str] = set()
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                if key in names:  # the loader would read one header and the other's data
                    raise fail(f"holds '{key}' twice (not written by diffcheck)")
                names.add(key)
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(f)
                                       if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
                if any(not isinstance(n, int) or n < 0 for n in shape):
                    raise fail(f"{key} declares the shape {list(shape)}")
                count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                if key == "meta":
                    if dtype.kind != "U" or count != 1 or dtype.itemsize // 4 > MAX_META:
                        raise fail(f"'meta' is {dtype} {list(shape)}, expected one JSON text "
                                   f"of at most {MAX_META} characters")
                    continue
                if dtype.kind not in "iub":
                    raise fail(f"{key.partition('/')[2] or key} holds {dtype} data, expected "
                               "int32")
                declared += count
                if declared > limit:
                    raise fail(f"declares more than {limit} elements ({key} is {list(shape)}); "
                               "raise DIFFCHECK_MAX_ELEMENTS if it is really that large")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except CaseFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise fail(f"not a readable .npz archive ({type(e).__name__}: {e})") from None


#: meta fields: name -> (types accepted, required)
_META_FIELDS = {
    "path": (str, True), "k": (int, True), "fill": (int, True), "seed": (int, False),
    "name": (str, False), "suite": (str, False), "description": (str, False),
    "columns": (dict, False), "format": (int, False), "fill_swapped": (bool, False),
    "scalars": (dict, False), "without_out": (bool, False),
    #: the domain's stale transformations that made a malformed case (coverage)
    "stale": (list, False),
}


def _meta(meta: dict, fail) -> dict:
    """The case metadata, every field of the right type (a wrong one named)."""
    for name, (kind, required) in _META_FIELDS.items():
        if name not in meta:
            if required:
                raise fail(f"'meta' has no '{name}' field")
            continue
        value = meta[name]
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong:
            raise fail(f"meta field '{name}' is {json.dumps(value)[:40]}, expected "
                       f"{'an integer' if kind is int else 'a ' + kind.__name__}")
    if not all(isinstance(label, str) and len(label) < 200 for label in meta.get("stale", [])):
        raise fail("meta field 'stale' must list short texts (tensor:transformation)")
    for field in ("columns", "scalars"):
        for key, value in meta.get(field, {}).items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise fail(f"meta field '{field}' maps {key} to {json.dumps(value)[:40]}, "
                           "expected an integer")
    if meta["fill"] not in FILLS:
        raise fail(f"meta field 'fill' is {meta['fill']}, expected 0 (ATOM) or -1 (vLLM/SGLang)")
    return meta


#: the fill values of the contracts: 0 (ATOM), -1 (vLLM, SGLang)
FILLS = (0, -1)


def _steps_agree(steps: list[Case], sizes: list[int], fail) -> None:
    """The steps of one scenario share its contract (K, fill, scalars, how the kernel is
    called), and the steps of one graph size its buffers' shapes: they are loaded into the
    same static buffers."""
    first = steps[0]
    for i, step in enumerate(steps[1:], start=1):
        for what in ("k", "fill", "scalars", "fill_swapped", "without_out"):
            if getattr(step, what) != getattr(first, what):
                raise fail(f"step {i} has {what} {getattr(step, what)!r}, step 0 "
                           f"{getattr(first, what)!r} (a scenario's steps share them)")
    shapes: dict[int, tuple] = {}
    for i, (step, size) in enumerate(zip(steps, sizes, strict=True)):
        seen = (sorted((n, tuple(t.shape)) for n, t in step.inputs.items()),
                sorted(step.columns.items()))
        if shapes.setdefault(size, seen) != seen:
            raise fail(f"step {i} loads buffers of other shapes than the earlier steps on "
                       f"its graph of {size} (the static buffers are one set per graph)")


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write an .npz whole or not at all: a run stopped mid-save leaves no truncated file."""
    with replacing(path) as partial, partial.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return path


#: how deep a case file's meta may nest (diffcheck writes 3 levels at most)
META_DEPTH = 32


def _depth(text: str) -> int:
    """How deep the brackets of a JSON text nest, counted before parsing (the parser recurses
    once per level: a meta of 100,000 '[' would exhaust Python's stack)."""
    depth = deepest = 0
    quoted = escaped = False
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            continue
        if char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _reader(path: Path):
    def fail(why: str) -> CaseFileError:
        return CaseFileError(f"case file {path}: {why}")

    return fail


def _open(path: Path, fail) -> tuple[dict, dict[str, np.ndarray]]:
    """(raw meta, arrays) of a case or scenario file, the meta parsed but not yet checked."""
    if not path.is_file():
        raise fail("no such file (write one with `diffcheck export` or diffcheck.case.save_case)")
    arrays = _read_arrays(path, fail)
    if "meta" not in arrays:
        raise fail("no 'meta' entry (not written by diffcheck; re-save it with save_case)")
    text = str(arrays.pop("meta"))
    if _depth(text) > META_DEPTH:
        raise fail(f"'meta' nests deeper than {META_DEPTH} levels (not written by diffcheck)")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise fail(f"'meta' is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise fail(f"'meta' is a JSON {type(meta).__name__}, expected an object")
    return meta, arrays


def _case_from(meta: dict, arrays: dict[str, np.ndarray], path: Path, fail,
               validate: bool) -> Case:
    """One case from its (unchecked) meta and its arrays ``inputs/<n>``, ``intended/<n>``."""
    meta = _meta(meta, fail)
    paths = known_paths()
    if meta["path"] not in paths:
        raise fail(f"unknown path '{meta['path']}'; known: {', '.join(paths)}")
    inputs, intended = {}, {}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in ("inputs", "intended") or not name:
            raise fail(f"unexpected entry '{key}' (expected inputs/<name> or intended/<name>)")
        native = value.dtype.newbyteorder("=")  # torch takes native byte order only
        (inputs if group == "inputs" else intended)[name] = torch.from_numpy(
            np.array(value, dtype=native))
    case = Case(
        path=meta["path"], name=meta.get("name") or path.stem, k=meta["k"], fill=meta["fill"],
        seed=meta.get("seed", 0), description=meta.get("description", ""), inputs=inputs,
        columns=dict(meta.get("columns", {})), intended=intended or None,
        suite=meta.get("suite", ""), source=str(path.resolve()),
        fill_swapped=meta.get("fill_swapped", False), scalars=dict(meta.get("scalars", {})),
        without_out=meta.get("without_out", False), stale=tuple(meta.get("stale", ())),
    )
    problems = case_problems(case) if validate else schema_problems(case, get_path(case.path))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        hint = "" if not validate else " (see `diffcheck show` for every finding)"
        raise fail(problems[0] + more + hint)
    data, margins = staged_elements(case)
    if data + margins > max_elements() or margins > max(MARGIN_RATIO * data, MARGIN_FLOOR):
        # small arrays, but margins (one top-k row each) and an output sized by K
        raise fail(f"would stage {data + margins:,} elements, {margins:,} of them margins of "
                   f"one top-k row ({margin_for(case.inputs):,} elements) around each buffer: "
                   f"a width out of proportion to its {data:,} elements of data")
    return case


#: margins may take this many times the case's own elements (or MARGIN_FLOOR) before a case
#: file is refused: staging multiplies them (fillings, copies), and a few KB of zeros with a
#: top-k width of 2^22 asked for gigabytes
MARGIN_RATIO = 8
MARGIN_FLOOR = 1 << 24


def staged_elements(case: Case) -> tuple[int, int]:
    """(the case's data and output, its margins) as staging lays them out (diffcheck.buffers):
    every tensor and the output between two margins."""
    inputs = case.intended_inputs()
    out = get_path(case.path).workspace_size(inputs, case.k)
    tensors = list(case.inputs.values())
    return (sum(t.numel() for t in tensors) + out,
            2 * margin_for(case.inputs) * (len(tensors) + 1))


def load_case(path: str | Path, validate: bool = True) -> Case:
    """Read and validate a case file; raises CaseFileError with one actionable line.

    ``validate=False`` still checks the schema but accepts a batch that breaks the contract
    (a case recorded from a live engine may; ``diffcheck show`` lists what is wrong).
    """
    path = Path(path)
    fail = _reader(path)
    meta, arrays = _open(path, fail)
    if meta.get("kind") == "scenario":
        raise fail("is a replay scenario, not one case: replay it with `diffcheck compare "
                   f"--cases {path} --mode replay`")
    return _case_from(meta, arrays, path, fail, validate)


def load_any(path: str | Path, validate: bool = True) -> Case | Scenario:
    """A case file or a scenario file, read and validated."""
    path = Path(path)
    fail = _reader(path)
    meta, arrays = _open(path, fail)
    if meta.get("kind") == "scenario":
        return _scenario_from(meta, arrays, path, fail, validate)
    return _case_from(meta, arrays, path, fail, validate)


def save_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write a replay scenario (its steps, their graph sizes and intended batches) as one
    ``.npz`` file that loads without pickle, like a case file."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    steps = []
    for i, step in enumerate(scenario.steps):
        for group, tensors in (("inputs", step.inputs), ("intended", step.intended or {})):
            arrays.update({f"steps/{i}/{group}/{n}": t.detach().cpu().contiguous().numpy()
                           for n, t in tensors.items()})
        steps.append({
            "name": step.name, "k": step.k, "fill": step.fill, "seed": step.seed,
            "description": step.description, "columns": step.columns,
            "fill_swapped": step.fill_swapped, "scalars": step.scalars,
            "without_out": step.without_out, "path": step.path, "suite": step.suite,
        })
    meta = {"format": FORMAT_VERSION, "kind": "scenario", "path": scenario.path,
            "name": scenario.name, "suite": scenario.suite,
            "description": scenario.description, "sizes": scenario.sizes,
            "graph": scenario.graph, "steps": steps}
    arrays["meta"] = np.array(json.dumps(meta))
    return _write(path, arrays)


def _scenario_from(meta: dict, arrays: dict[str, np.ndarray], path: Path, fail,
                   validate: bool) -> Scenario:
    """A scenario from its meta (``steps``: one case meta each; ``sizes``: their graph sizes)
    and its arrays ``steps/<i>/inputs/<name>``, ``steps/<i>/intended/<name>``."""
    steps, sizes = meta.get("steps"), meta.get("sizes")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise fail("scenario meta has no 'steps' list of step objects")
    if len(steps) < 2:
        raise fail(f"a scenario needs a capture step and at least one more, it has "
                   f"{len(steps)}")
    if not isinstance(sizes, list) or len(sizes) != len(steps) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise fail(f"scenario meta field 'sizes' must hold one graph size (>= 1) per step "
                   f"({len(steps)})")
    for key in ("path", "name", "suite", "description"):
        if not isinstance(meta.get(key, ""), str):
            raise fail(f"scenario meta field '{key}' must be a text")
    graph = meta.get("graph")
    if graph is not None and (not isinstance(graph, int) or isinstance(graph, bool)):
        raise fail("scenario meta field 'graph' must be an integer or null")
    grouped: dict[int, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        head, _, rest = key.partition("/")
        index, _, inner = rest.partition("/")
        if head != "steps" or not (index.isascii() and index.isdigit()) or \
                str(int(index)) != index or int(index) >= len(steps) or not inner:
            raise fail(f"unexpected entry '{key}' (expected steps/<i>/inputs/<name> or "
                       f"steps/<i>/intended/<name> for i < {len(steps)})")
        grouped.setdefault(int(index), {})[inner] = value
    cases = []
    for i, step_meta in enumerate(steps):
        if step_meta.get("path", meta.get("path")) != meta.get("path"):
            raise fail(f"step {i} is of path {step_meta.get('path')!r}, the scenario of "
                       f"{meta.get('path')!r}")
        step_meta = {**step_meta, "path": meta.get("path")}

        def step_fail(why: str, i: int = i) -> CaseFileError:
            return fail(f"step {i}: {why}")

        case = _case_from(step_meta, grouped.get(i, {}), path, step_fail, validate)
        cases.append(case)
    _steps_agree(cases, list(sizes), fail)
    return Scenario(cases[0].path, meta.get("name") or path.stem, meta.get("suite", ""),
                    meta.get("description", ""), cases, list(sizes), graph,
                    source=str(path.resolve()))


def describe_case(case: Case) -> str:
    """What a case holds, for people: sizes, region lengths, well-formedness findings."""
    spec = get_path(case.path)
    seen = case.kernel_inputs()
    requests, rows = spec.counts(seen)
    starts, ends = spec.row_bounds(seen, case.k)
    lengths = (ends - starts).clamp(0, case.k) if starts.numel() else starts
    scalars = "".join(f", {n} {v}" for n, v in spec.scalars_of(case.scalars).items())
    lines = [f"{case.case_id}: path {case.path}, K={case.k}, fill {case.fill}{scalars}, "
             f"seed {case.seed}",
             f"  {case.description}" if case.description else "",
             f"  requests {requests}, output rows ({spec.row_label}s) {rows}, "
             f"workspace {spec.workspace_size(case.intended_inputs(), case.k)} elements"]
    for name in spec.names:
        t = case.inputs[name]
        view = f", kernel sees [:, :{case.columns[name]}]" if name in case.columns else ""
        lines.append(f"  {name:<18} {str(t.dtype).replace('torch.', '')} "
                     f"{list(t.shape)}{view}")
    if lengths.numel():
        lines.append(f"  region lengths: min {int(lengths.min())}, median "
                     f"{int(lengths.median())}, max {int(lengths.max())}, "
                     f"{int((lengths == 0).sum())} empty")
    problems = spec.violations_of(seen, case.k, case.scalars)
    lines.append("  inputs: well-formed" if not problems else "  inputs break the contract:")
    lines += [f"    - {p}" for p in problems]
    if case.intended is not None:
        lines.append("  malformed case: judged against its intended batch, which is "
                     + ("well-formed" if not case_problems(case) else "NOT well-formed"))
    return "\n".join(line for line in lines if line)


def describe_file(path: Path) -> list[str]:
    """What a case or scenario file holds, for `diffcheck show` (a scenario: each step)."""
    from diffcheck.case import Scenario

    target = load_any(path, validate=False)
    if not isinstance(target, Scenario):
        return [describe_case(target)]
    lines = [f"{target.case_id}: replay scenario of path {target.path}, {len(target.steps)} "
             f"steps on graphs of {sorted(set(target.sizes))} rows"]
    if target.description:
        lines.append(f"  {target.description}")
    return lines + [f"step on a graph of {size}: " + describe_case(step)
                    for step, size in zip(target.steps, target.sizes, strict=True)]
