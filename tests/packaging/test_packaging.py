"""Packaging: a missing extra is named in one line; the built sdist and wheel install and work.

The import-message tests hide a framework from a child interpreter (``sys.modules[name] =
None`` makes its import fail as if it were not installed) rather than uninstalling it. The
wheel test (slow: a fresh virtual environment) builds the sdist and the wheel from a clean
copy of the repository, installs the wheel with ``torch==2.13.0`` and uses it from outside the
source tree. The helpers here (a clean copy, a fresh environment) serve tests/docs/test_readme.py too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("energy_core", "lightning_energy", "hf_energy")
TORCH = "torch==2.13.0"  # the CPU build; an unpinned torch pulls GBs of CUDA wheels


def import_without(hidden: list[str], module: str) -> subprocess.CompletedProcess[str]:
    """``import module`` in a child interpreter where the ``hidden`` modules cannot be imported."""
    code = f"import sys; sys.modules.update(dict.fromkeys({hidden!r})); import {module}"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_lightning_energy_without_lightning_names_the_extra() -> None:
    done = import_without(["lightning", "pytorch_lightning", "lightning_utilities"], "lightning_energy")
    assert done.returncode != 0
    assert done.stderr.splitlines()[-1] == (
        "ImportError: lightning_energy needs lightning or pytorch_lightning: pip install 'energy-callbacks[lightning]'"
    )
    # one error, raised before Lightning's own dependencies are imported
    assert done.stderr.count("Traceback") == 1 and "lightning_utilities" not in done.stderr


@pytest.mark.slow  # a fresh interpreter importing Lightning (about 5 s)
def test_lightning_energy_with_one_flavour_imports() -> None:
    done = import_without(["pytorch_lightning"], "lightning_energy")
    assert done.returncode == 0, done.stderr


def test_hf_energy_without_transformers_names_the_extra() -> None:
    done = import_without(["transformers"], "hf_energy")
    assert done.returncode != 0
    assert (
        done.stderr.splitlines()[-1] == "ImportError: hf_energy needs transformers: pip install 'energy-callbacks[hf]'"
    )
    assert done.stderr.count("Traceback") == 1


def test_hf_energy_without_accelerate_names_the_extra() -> None:
    done = import_without(["transformers", "accelerate"], "hf_energy")
    assert done.stderr.splitlines()[-1] == (
        "ImportError: hf_energy needs transformers and accelerate: pip install 'energy-callbacks[hf]'"
    )


def test_energy_core_needs_no_framework() -> None:
    done = import_without(["lightning", "pytorch_lightning", "transformers"], "energy_core.report")
    assert done.returncode == 0, done.stderr


# --- helpers for fresh environments (tests/docs/test_readme.py uses them too) ---------------------


def clean_copy(dest: Path) -> Path:
    """The repository's files as git sees them (tracked and new, not ignored), without build outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the work tree but still in the index is left out
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return dest


VENV_NEEDS_BYTES = 3 * 2**30  # torch's CPU build with Lightning or transformers: about 1.5 GiB


def fresh_venv(path: Path) -> dict[str, str]:
    """A new virtual environment (no system site-packages) and the environment variables that
    activate it; this test's own environment is taken off PATH so nothing leaks in. Fails at
    once, saying so, where the disk cannot hold one (rather than half-way through pip).
    Callers remove it with :func:`remove_venv` as soon as it is no longer needed."""
    free = shutil.disk_usage(path.parent).free
    if free < VENV_NEEDS_BYTES:
        pytest.fail(
            f"{path.parent} has {free / 2**30:.1f} GiB free; "
            f"a fresh environment needs {VENV_NEEDS_BYTES / 2**30:.0f} GiB"
        )
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    assert "include-system-site-packages = false" in (path / "pyvenv.cfg").read_text()
    own_bin = str(Path(sys.prefix) / "bin") if sys.prefix != sys.base_prefix else None
    keep = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != own_bin]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(VIRTUAL_ENV=str(path), PATH=os.pathsep.join([str(path / "bin"), *keep]), PYTHONNOUSERSITE="1")
    return env


def remove_venv(env: dict[str, str]) -> None:
    """Delete a :func:`fresh_venv` (GBs each: several at once can fill a CI machine's disk)."""
    shutil.rmtree(env["VIRTUAL_ENV"], ignore_errors=True)


def run(command: list[str] | str, cwd: Path, env: dict[str, str], timeout: int = 1200) -> str:
    """Run a command (a string runs in bash with -e and pipefail); fail the test with its output."""
    argv = ["bash", "-e", "-o", "pipefail", "-c", command] if isinstance(command, str) else command
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{output[-4000:]}"
    return output


# --- the built wheel ----------------------------------------------------------------------------

USE_THE_WHEEL = """
import json, sys, time
import energy_core, lightning_energy, hf_energy
from energy_core import EnergyTracker
from energy_core.carbon.location import country_intensity

print(json.dumps({name: sys.modules[name].__file__ for name in ("energy_core", "lightning_energy", "hf_energy")}))
print("FRA", country_intensity("FRA").g_per_kwh)  # codecarbon's bundled data, read from the install
tracker = EnergyTracker(devices=["cpu"], sample_interval_s=0.02, country="FRA", record_path="energy.jsonl")
tracker.start_fit(0)
for step in range(1, 4):
    time.sleep(0.2)
    tracker.window(step, extra={"train_loss": 1.0 / step})
tracker.end_fit(3)
tracker.close()
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # fresh environments: minutes, more on a loaded machine
def test_built_wheel_installs_and_works(tmp_path: Path) -> None:
    source = clean_copy(tmp_path / "source")
    dist = tmp_path / "dist"
    run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(source)],
        source,
        dict(os.environ),
    )
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    modules = sorted(str(p.relative_to(source)) for pkg in PACKAGES for p in (source / pkg).rglob("*.py"))
    assert "energy_core/devices/__init__.py" in modules and "energy_core/power/__init__.py" in modules
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert [m for m in modules if m not in in_wheel] == []  # every subpackage is shipped
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in in_wheel)
    in_sdist = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    assert [m for m in modules if m not in in_sdist] == [] and "README.md" in in_sdist

    env = fresh_venv(tmp_path / "venv")
    try:
        use_the_wheel(wheel, tmp_path, env)
    finally:
        remove_venv(env)


def use_the_wheel(wheel: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """Install the wheel with torch in ``env`` and use it, its command and its report."""
    run(["pip", "install", "-q", TORCH, f"{wheel}[lightning,hf]"], tmp_path, env)
    work = tmp_path / "work"  # outside the source tree: only the installed packages can be imported
    work.mkdir()
    output = run(["python", "-c", USE_THE_WHEEL], work, env)
    files = next(line for line in output.splitlines() if line.startswith("{"))
    assert all(str(tmp_path / "venv") in f for f in json.loads(files).values()), files
    assert any(line.startswith("FRA ") and float(line.split()[1]) > 0 for line in output.splitlines())

    assert "usage: energy-report" in run(["energy-report", "--help"], work, env)
    report = run(["energy-report", "energy.jsonl"], work, env)
    assert "completed" in report and "Traceback" not in report
    pngs = sorted(p.name for p in (work / "energy.report").glob("*.png"))
    assert pngs == [
        "co2e_vs_time.png",
        "energy_vs_step.png",
        "energy_vs_time.png",
        "loss_vs_kwh.png",
        "power_vs_step.png",
        "power_vs_time.png",
    ]
    assert (work / "energy.report" / "report.html").read_text().count("data:image/png") == 6
