"""diffcheck's modules import one another without a cycle, lazy imports inside functions
included: the runner, the report and the fast screen once imported each other (issue 24),
and a cycle is how one module's job leaks into another's."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "diffcheck"


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """{module: the diffcheck modules it imports anywhere in its body}."""
    files = {module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph = {}
    for name, file in files.items():
        found = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffcheck"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = (found & files.keys()) - {name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (empty when there is none)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_no_module_of_diffcheck_imports_itself_through_others():
    graph = imports()
    assert {"diffcheck.runner", "diffcheck.report", "diffcheck.fastcheck"} <= graph.keys()
    assert "diffcheck.report" in graph["diffcheck.runner"]  # the graph sees real imports
    assert cycle(graph) == [], " -> ".join(cycle(graph))


def test_no_function_of_diffcheck_is_over_60_lines_and_the_cli_only_parses_and_prints():
    """Issue 24's measure of a core one can read: functions short enough to hold in one
    view, and a command line that parses and prints while the work lives in the modules."""
    long = []
    for file in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    long.append(f"{module_name(file)}.{node.name}: {length} lines")
    assert not long, long
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 500
