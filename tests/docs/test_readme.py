"""README.md's commands run as written, each right after the install line printed beside it.

The convention (also in an HTML comment above README's first block):

- Every line of every fenced ```bash block is a command; lines are run in README order, in
  one clean copy of the repository (git's files, no build outputs), so later commands see the
  files earlier ones wrote (``energy-report`` reads the quickstart's record). Blank lines and
  ``#`` comments are skipped.
- A line starting with ``pip install`` runs in a fresh virtual environment made for that
  install command (the text before the first ``&&``), without system site-packages; the same
  install command further down reuses its environment. Any other line runs in the
  environment of the nearest install line above it. So a command passes only with what its
  own install line brings: one extra's environment never lends packages to another's.
- The test-suite line (``pip install ... && python -m pytest``) is not run here (it would
  run this test again): ``.ci/run`` runs it, in a fresh environment of its own.
- Every install line pins ``torch==2.13.0`` (the CPU build; unpinned, pip fetches GBs of
  CUDA wheels). Commands that need a GPU, a network service or an account go in ```text
  blocks, which are not run.

The fast tests check the convention (pins, extras that exist, scripts that exist); the slow
one runs everything, and after each ``energy-report RECORD`` line checks the page it wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.packaging.test_packaging import TORCH, clean_copy, fresh_venv, remove_venv, run

TEST_SUITE = re.compile(r"^pip install .*&& python -m pytest\b")  # the line .ci/run extracts


@dataclass(frozen=True)
class Command:
    """One README command: its text, its line number and the install command it runs after."""

    line: str
    number: int
    install: str

    @property
    def is_install(self) -> bool:
        return self.line.startswith("pip install")


def bash_lines(readme: str) -> list[tuple[int, str]]:
    """(line number, text) of every command line inside ```bash blocks."""
    found: list[tuple[int, str]] = []
    fence: str | None = None  # the info string of the open block, None outside blocks
    for number, text in enumerate(readme.splitlines(), start=1):
        stripped = text.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence == "bash" and stripped and not stripped.startswith("#"):
            found.append((number, stripped))
    assert fence is None, "README.md ends inside a code block"
    return found


def commands(readme: str) -> list[Command]:
    """The runnable commands, each with the install command whose environment it runs in."""
    out: list[Command] = []
    install = ""
    for number, line in bash_lines(readme):
        if TEST_SUITE.match(line):
            continue
        if line.startswith("pip install"):
            install = line.split("&&")[0].strip()
        assert install, f"README.md:{number}: `{line}` comes before any install line"
        out.append(Command(line, number, install))
    return out


README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_install_line_pins_torch_and_names_real_extras() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installs = [line for _, line in bash_lines(README) if "pip install" in line]
    assert len(installs) >= 3
    for line in installs:
        assert line.startswith("pip install"), f"an install must start its line: {line}"
        assert TORCH in line.split("&&")[0], f"torch must be pinned to {TORCH}: {line}"
        for named in re.findall(r'\.\[([^\]]*)\]"', line):
            assert set(named.split(",")) <= extras, f"unknown extra in: {line}"


def test_scripts_and_configs_named_by_commands_exist() -> None:
    named = [word for _, line in bash_lines(README) for word in line.split() if word.startswith("examples/")]
    assert "examples/lightning_quickstart.py" in named and "examples/hf_finetune.py" in named
    assert [n for n in named if not (ROOT / n).is_file()] == []


def test_the_test_suite_line_is_the_one_ci_runs() -> None:
    suite = [line for _, line in bash_lines(README) if TEST_SUITE.match(line)]
    assert suite == ['pip install torch==2.13.0 -e ".[dev]" && python -m pytest']
    assert "grep -m1 -E '^pip install .*&& python -m pytest' README.md" in (ROOT / ".ci" / "run").read_text()


def test_first_command_is_the_quickstart() -> None:
    first = commands(README)[0]
    assert first.line == 'pip install torch==2.13.0 -e ".[lightning]" && python examples/lightning_quickstart.py'


def check_report(command: Command, cwd: Path, output: str) -> None:
    """After ``energy-report RECORD ... [--out DIR]``: the summary printed and the page written."""
    words = command.line.split()
    out = Path(words[words.index("--out") + 1]) if "--out" in words else Path(words[1]).with_suffix(".report")
    assert "Energy report" in output and "completed" in output, output[-3000:]
    page = (cwd / out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 4  # energy and power, against step and time


@pytest.mark.slow
@pytest.mark.timeout(1800)  # fresh environments: minutes, more on a loaded machine
def test_readme_commands_run_in_fresh_environments(tmp_path: Path) -> None:
    repo = clean_copy(tmp_path / "repo")
    envs: dict[str, dict[str, str]] = {}
    ran = []
    listed = commands(README)
    last_use = {command.install: index for index, command in enumerate(listed)}
    try:
        for index, command in enumerate(listed):
            if command.install not in envs:
                envs[command.install] = fresh_venv(tmp_path / f"venv{len(envs)}")
            output = run(command.line, repo, envs[command.install])
            assert "Traceback" not in output, f"README.md:{command.number}: {command.line}\n{output[-4000:]}"
            if command.line.startswith("energy-report ") and ".jsonl" in command.line:
                check_report(command, repo, output)
            ran.append(command.line)
            if last_use[command.install] == index:  # its last command: free its GBs now
                remove_venv(envs[command.install])
    finally:
        for env in envs.values():
            remove_venv(env)
    assert any("lightning_quickstart.py" in line for line in ran) and any("hf_finetune.py" in line for line in ran)
    assert len(envs) >= 2  # the Lightning and the Hugging Face commands each in their own environment
