"""diffcheck installs beside an engine without side effects: its wheel holds one top-level
package (kernels/, refimpl/ and fixtures/ live inside it as diffcheck.kernels, ...), installing
it leaves torch, triton and numpy alone, and an engine's own `kernels` package stays its own."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the tree: setuptools writes build/ into the source, and two test
    workers that each need the wheel would otherwise build in the same folder at once."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "diffcheck"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".whl", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source))
    (built,) = out.glob("diffcheck-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info",
                                                                             ".data"))}
    assert tops == {"diffcheck"}
    for module in ("diffcheck/kernels/decode.py", "diffcheck/refimpl/blocktable.py",
                   "diffcheck/fixtures/prefill.py", "diffcheck/paths/mtp.py"):
        assert module in names


def test_installing_changes_no_torch_triton_or_numpy(wheel):
    """What pip would install into this environment (which has torch, triton and numpy of
    its own, as an engine's has): none of them, whatever their versions."""
    report = json.loads(pip("install", "--dry-run", "--quiet", "--report", "-",
                            str(wheel)).stdout)
    planned = {item["metadata"]["name"].lower() for item in report["install"]}
    assert planned <= {"diffcheck"}, planned  # nothing when this diffcheck is installed
    requires = zipfile.ZipFile(wheel).read(
        next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))).decode()
    required = [line for line in requires.splitlines() if line.startswith("Requires-Dist:")
                and "extra ==" not in line]
    # no triton outside the [interpreter] extra: ROCm's is pytorch-triton-rocm
    assert not any("triton" in line for line in required), required


def test_an_engines_own_kernels_package_is_not_shadowed(wheel, tmp_path):
    site = tmp_path / "site"
    pip("install", "--no-deps", "--quiet", "--target", str(site), str(wheel))
    engine = tmp_path / "engine"
    (engine / "kernels").mkdir(parents=True)
    (engine / "kernels" / "__init__.py").write_text("")
    (engine / "kernels" / "ops.py").write_text(
        "from diffcheck.refimpl.decode import decode_reference_impl\n\n\n"
        "def convert(*args, **kwargs):\n    return decode_reference_impl(*args, **kwargs)\n")
    env = {**os.environ, "PYTHONPATH": f"{engine}{os.pathsep}{site}"}
    env.pop("TRITON_INTERPRET", None)
    probe = subprocess.run(
        [sys.executable, "-c", "import kernels.ops, diffcheck, diffcheck.kernels.decode; "
         "print(kernels.ops.__file__); print(diffcheck.__file__)"],
        cwd=engine, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    engine_file, diffcheck_file = probe.stdout.split()
    assert engine_file.startswith(str(engine)) and diffcheck_file.startswith(str(site))
    report = tmp_path / "r.csv"
    done = subprocess.run(
        [sys.executable, "-m", "diffcheck", "compare", "--impl", "kernels.ops:convert",
         "--path", "decode", "--suite", "smoke", "--max-cases", "2", "--mode", "eager",
         "--isolation", "none", "--report", str(report), "--quiet"],
        cwd=engine, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kernels.ops:convert" in report.read_text()
