"""docs/contracts.md stays true: every registered path of the package has a section, and
every worked example in it is what the path's reference computes."""

import re
from pathlib import Path

import pytest
import torch

from diffcheck.paths import get_path, known_paths

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "contracts.md"
PACKAGE_PATHS = ROOT / "diffcheck" / "paths"
EXAMPLE = re.compile(r"```python\n# example: (\w+) K=(\d+)([^\n]*)\n(.*?)```", re.S)


def examples():
    found = []
    for m in EXAMPLE.finditer(DOC.read_text()):
        path, k, options, body = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        scalars = {key: int(value) for key, value in re.findall(r"(\w+)=(-?\d+)", options)}
        found.append(pytest.param(path, k, scalars, body, id=f"{path}{options.replace(' ', '-')}"))
    return found


def test_every_builtin_path_has_a_section_and_an_example():
    text = DOC.read_text()
    documented = {p.values[0] for p in examples()}
    builtin = [name for name in known_paths() if (PACKAGE_PATHS / f"{name}.py").exists()]
    assert len(builtin) >= 4
    for name in builtin:
        assert f"\n## {name} " in text, f"docs/contracts.md has no section for {name}"
        assert name in documented, f"docs/contracts.md has no worked example for {name}"


@pytest.mark.parametrize("path, k, scalars, body", examples())
def test_worked_example_is_what_the_reference_computes(path, k, scalars, body):
    spec = get_path(path)
    values: dict = {}
    exec(body, {}, values)  # plain list literals
    tensors = {name: torch.tensor(values[name], dtype=torch.int32) for name in spec.names
               if name in values}
    for name in spec.names:  # a tensor only some variants read (blocktable's seq_lens)
        tensors.setdefault(name, torch.zeros(0, dtype=torch.int32))
    out = values["out"]
    size = spec.workspace_size(tensors, k)
    expected, mask = spec.expected(tensors, k, spec.fill, scalars, size)["out"]
    assert int(mask.sum()) == len(out)
    assert expected[mask].tolist() == out
