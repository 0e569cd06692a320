"""Every code block of the documentation (docs/**/*.md and README.md) is run or checked.

The convention, for whoever writes a page:

- Every fence names its language. ```python blocks **run**: a page's blocks run in order in
  one namespace (a later block may use what an earlier one defined), in an empty working
  directory, on a simulated NVIDIA GPU drawing 300 W (no RAPL: the CPU is estimated), with
  W&B offline. A block that uses the reader's own model and data is preceded by
  ``<!-- docs-test: given NAME -->`` and gets those names from tests/helpers/docs_given.py
  (``lightning``: ``model``, ``train_loader``, ``val_loader``; ``hf``: ``model``,
  ``train_dataset``, ``eval_dataset``, ``data_collator``; ``loop``: ``model``,
  ``optimizer``, ``loader``, ``val_loader``, ``train_step``, ``validate``).
- ``<!-- docs-test: skip: REASON -->`` before a block skips it; the reason is required
  and is printed by pytest (``-rs``). Use it only for what cannot run here (a real GPU,
  a network service, minutes of training).
- ```bash blocks are **checked, not run** (they install packages or take minutes; the
  README's are run by tests/docs/test_readme.py): every install pins torch and names real
  extras; every ``python FILE`` / ``python -m MODULE`` names a file that exists and only
  options its source defines; every ``energy-report`` option exists.
- ```yaml blocks are parsed, and every ``class_path`` with its ``init_args`` is
  imported and constructed (LightningCLI configs). ```json blocks hold JSON lines.
- A block whose content is ``--8<-- "FILE"`` (or ``--8<--``, ``FILE``, ``--8<--`` on three
  lines: the form ``ruff format`` leaves alone in python blocks) shows that file
  (pymdownx.snippets): the file must exist and be run by a test in tests/ (named there).
- ```text blocks are output or commands that need what tests lack (a GPU, an account);
  they are not code and are not run.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers import ROOT
from tests.helpers.docs_given import GIVEN
from tests.packaging.test_packaging import TORCH

PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
LANGUAGES = {"python", "bash", "yaml", "json", "text"}
MARKER = re.compile(r"^<!-- docs-test: (skip: (?P<reason>.*?)|given (?P<given>[\w, ]+?)) -->$")
# pymdownx.snippets, one line (--8<-- "FILE") or a block (--8<--, FILE, --8<--; the form
# `ruff format` leaves alone in python blocks).
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$|^--8<--\n(?P<block>[^\n]+)\n--8<--$')


@dataclass
class Block:
    page: Path
    line: int  # the line of the opening fence
    language: str
    text: str
    skip: str | None = None
    given: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def included(self) -> str | None:
        found = SNIPPET.match(self.text.strip())
        return (found.group("path") or found.group("block")).strip() if found else None


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, with the docs-test markers on the lines just above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped.startswith("```"):
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        start, language = i, stripped[3:].strip().split(" ")[0]
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        assert i < len(lines), f"{page.relative_to(ROOT)}:{start + 1}: a code block is never closed"
        text = textwrap.dedent("\n".join(line[indent:] if line[:indent].isspace() else line
                                         for line in lines[start + 1 : i]))  # fmt: skip
        block = Block(page, start + 1, language, text)
        above = start - 1
        while above >= 0 and lines[above].strip().startswith("<!-- docs-test:"):
            marker = MARKER.match(lines[above].strip())
            assert marker, f"{page.relative_to(ROOT)}:{above + 1}: malformed marker {lines[above].strip()!r}"
            if marker.group("reason") is not None:
                block.skip = marker.group("reason").strip()
            else:
                block.given += [name.strip() for name in marker.group("given").split(",")]
            above -= 1
        found.append(block)
        i += 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]


def test_the_docs_have_code_to_test() -> None:
    languages = [b.language for b in ALL]
    assert languages.count("python") >= 20 and "bash" in languages and "yaml" in languages


def test_every_block_names_a_known_language_and_markers_are_complete() -> None:
    bad = [f"{b.where}: ```{b.language}" for b in ALL if b.language not in LANGUAGES]
    assert bad == [], "name a language: python, bash, yaml, json or text (see tests/docs/test_blocks.py)"
    for b in ALL:
        assert b.skip is None or len(b.skip) > 10, f"{b.where}: a skip needs its reason"
        assert set(b.given) <= set(GIVEN), f"{b.where}: unknown given {b.given}; known: {sorted(GIVEN)}"
        assert not (b.given or b.skip) or b.language == "python", f"{b.where}: markers are for python blocks"


def test_skipped_blocks_are_few() -> None:
    python = [b for b in ALL if b.language == "python" and b.included is None]
    skipped = [f"{b.where}: {b.skip}" for b in python if b.skip]
    assert len(skipped) <= len(python) // 4, skipped


PYTHON_PAGES = sorted({b.page for b in ALL if b.language == "python" and b.included is None})


@pytest.fixture
def docs_machine(sim_gpus, tmp_path, monkeypatch):
    """What the snippets run on: a 300 W GPU, an empty working directory, W&B offline."""
    sim_gpus(SimGpu("GPU-d0c5", Constant(300.0), counter_period_s=0.02))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


# Pages whose blocks train for seconds (several trainers, loggers): CI's slow step runs them.
SLOW_PAGES = {"docs/guides/loggers.md", "docs/guides/energy-to-target.md", "docs/guides/checkpoints.md",
              "docs/guides/budgets.md", "docs/getting-started/huggingface.md", "docs/guides/time-shifting.md",
              "docs/getting-started/loops.md", "README.md"}  # fmt: skip


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=pytest.mark.slow) if str(p.relative_to(ROOT)) in SLOW_PAGES else p for p in PYTHON_PAGES],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_python_blocks_run(page: Path, docs_machine) -> None:
    namespace: dict = {"__name__": "__docs__"}
    ran, skipped = 0, []
    for block in blocks(page):
        if block.language != "python" or block.included is not None:
            continue
        if block.skip:
            skipped.append(f"{block.where}: {block.skip}")
            continue
        for name in block.given:
            namespace.update(GIVEN[name]())
        # Padded so that a traceback names the page's own line numbers.
        code = compile("\n" * block.line + block.text, str(block.page.relative_to(ROOT)), "exec")
        exec(code, namespace)
        ran += 1
    if not ran:
        pytest.skip("; ".join(skipped))


def options_in(source: str) -> set[str]:
    return set(re.findall(r"""["'](--[\w-]+)["']""", source))


def check_command(words: list[str], where: str) -> None:
    """One command of a bash block: the files, modules and options it names exist."""
    if words[0] == "pip":
        line = " ".join(words)
        assert words[1] == "install" and TORCH in line, f"{where}: installs pin {TORCH}: {line}"
        tomllib = pytest.importorskip("tomllib")
        extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
        for named in re.findall(r"\.\[([^\]]*)\]", line):
            assert set(named.split(",")) <= extras, f"{where}: unknown extra in {line}"
        return
    if words[0] == "energy-report":
        source = (ROOT / "energy_core" / "report" / "cli.py").read_text()
        used = {w.split("=")[0] for w in words[1:] if w.startswith("--")}
        assert used <= options_in(source), f"{where}: energy-report has no {used - options_in(source)}"
        return
    assert words[0] in ("python", "torchrun"), f"{where}: unknown command {words[0]} (use a text block?)"
    args = words[1:]
    while args and args[0].startswith("--") and words[0] == "torchrun":  # torchrun's own options
        args = args[1:]
    if args[:2] == ["-m", "pytest"]:
        return
    if args[0] == "-m":
        path = ROOT / (args[1].replace(".", "/") + ".py")
        rest = args[2:]
    else:
        path, rest = ROOT / args[0], args[1:]
    assert path.is_file(), f"{where}: {path.relative_to(ROOT)} does not exist"
    used = {w.split("=")[0] for w in rest if w.startswith("--")}
    source = path.read_text()
    if path.name == "lightning_cli.py":  # LightningCLI's own options
        used -= {"--config", "--print_config"}
    assert used <= options_in(source), f"{where}: {path.relative_to(ROOT)} defines no {used - options_in(source)}"
    for config in [w for w in rest if w.endswith((".yaml", ".yml", ".py", ".jsonl"))]:
        if not config.startswith("runs/"):
            assert (ROOT / config).is_file(), f"{where}: {config} does not exist"


def test_bash_blocks_name_real_files_and_options() -> None:
    checked = 0
    for block in [b for b in ALL if b.language == "bash" and b.included is None]:
        text = block.text.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for part in line.split("&&"):
                words = shlex.split(part.strip())
                while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value command
                    words = words[1:]
                check_command(words, block.where)
                checked += 1
    assert checked >= 10


def construct(config, where: str) -> int:
    """Import and construct every ``class_path`` with its ``init_args`` in a parsed YAML config."""
    import importlib

    built = 0
    if isinstance(config, dict):
        if "class_path" in config:
            module, _, name = config["class_path"].rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            cls(**(config.get("init_args") or {}))
            built += 1
        for value in config.values():
            built += construct(value, where)
    elif isinstance(config, list):
        for value in config:
            built += construct(value, where)
    return built


def test_yaml_blocks_construct_their_classes(docs_machine) -> None:
    yaml = pytest.importorskip("yaml")
    built = 0
    for block in [b for b in ALL if b.language == "yaml"]:
        text = (ROOT / block.included).read_text() if block.included else block.text
        built += construct(yaml.safe_load(text), block.where)
    assert built >= 2


def test_json_blocks_are_json_lines() -> None:
    for block in [b for b in ALL if b.language == "json"]:
        for number, line in enumerate(block.text.splitlines(), start=block.line + 1):
            if line.strip():
                json.loads(line)  # raises, naming the position, for a broken line
                assert line.startswith("{"), f"{block.page.name}:{number}: one JSON object per line"


def test_included_files_exist_and_are_run_by_tests() -> None:
    tests_text = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    included = [b for b in ALL if b.included]
    assert included, "the pages show the examples through pymdownx.snippets"
    for block in included:
        path = ROOT / block.included
        assert path.is_file(), f"{block.where}: {block.included} does not exist"
        assert path.stem in tests_text, f"{block.where}: no test names {path.name}"
