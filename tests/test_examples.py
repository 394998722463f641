"""The scripts of docs/examples/ and docs/habits/, run as a reader runs them.

Each script runs as ``python docs/<folder>/NAME.py`` from the repository
root, in an interpreter of its own, and what it prints must be the
transcript its page shows: a ``console`` block that starts with that
command. A transcript is the terminal's view: the script's stderr (each
traceback cut to its exception and the first lines of its message), then
its stdout, then, for the habits, the exit code. The examples must exit 0
with nothing on stderr; every script must appear on a page.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("docs/examples.md", "docs/install.md")
COMMAND = re.compile(r"\$ python (docs/(?:examples|habits)/\w+\.py)")
TRACEBACK = "Traceback (most recent call last):"
#: Lines of an exception kept in a transcript, its first line included.
MESSAGE_LINES = 3
#: The pages show what the docs' interpreter (3.12, see noxfile.py) prints;
#: later versions word some messages differently.
WORDING = {
    (3, 13): [("Can't get local object", "Can't pickle local object")],
}


def shown() -> dict[str, str]:
    """Every transcript on the pages, by script path."""
    transcripts = {}
    for page in PAGES:
        text = (ROOT / page).read_text()
        for block in re.findall(r"^```console\n(.*?)^```$", text, flags=re.M | re.S):
            found = COMMAND.fullmatch(block.splitlines()[0])
            if found:
                transcripts[found[1]] = block.rstrip("\n")
    return transcripts


SHOWN = shown()


def condensed(stderr: str) -> list[str]:
    """``stderr`` as a transcript shows it.

    A traceback keeps its first line, ``  ...`` for its frames, its
    exception, and the first lines of the exception's first paragraph;
    ``        ...`` stands for the rest of a longer message.
    """
    lines: list[str] = []
    state = "text"  # "frames" after a traceback's first line, "message" after its exception
    kept, paragraph, cut = 0, True, False
    for line in stderr.replace(str(ROOT), "...").splitlines():
        if line == TRACEBACK:
            lines += [line, "  ..."]
            state = "frames"
        elif state == "frames" and line.startswith(" "):
            continue
        elif state == "frames":
            lines.append(line.rstrip())
            state, kept, paragraph, cut = "message", 1, True, False
        elif state == "message" and not line.strip():
            paragraph = False
        elif state == "message" and line.startswith(" "):
            if paragraph and kept < MESSAGE_LINES:
                lines.append(line.rstrip())
                kept += 1
            elif not cut:
                lines.append("        ...")
                cut = True
        else:
            lines.append(line)
            state = "text"
    return lines


def run(script: str) -> subprocess.CompletedProcess[str]:
    """``python SCRIPT`` from the repository root, shmref importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def transcript(script: str, done: subprocess.CompletedProcess[str]) -> str:
    lines = [f"$ python {script}", *condensed(done.stderr), *done.stdout.splitlines()]
    if script.startswith("docs/habits/"):
        lines += ["$ echo $?", str(done.returncode)]
    text = "\n".join(lines)
    for old, new in WORDING.get(sys.version_info[:2], []):
        text = text.replace(old, new)
    return text


def scripts(folder: str) -> list[str]:
    return sorted(f"docs/{folder}/{p.name}" for p in (ROOT / "docs" / folder).glob("*.py"))


@pytest.mark.parametrize("script", scripts("examples"))
def test_example_runs_as_shown(script: str) -> None:
    assert script in SHOWN, f"{script} has no transcript on {' or '.join(PAGES)}"
    done = run(script)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert transcript(script, done) == SHOWN[script]


@pytest.mark.parametrize("script", scripts("habits"))
def test_habit_fails_as_shown(script: str) -> None:
    assert script in SHOWN, f"{script} has no transcript on {' or '.join(PAGES)}"
    assert transcript(script, run(script)) == SHOWN[script]


def test_every_transcript_has_its_script() -> None:
    assert sorted(SHOWN) == sorted(scripts("examples") + scripts("habits"))


@pytest.mark.parametrize("script", scripts("examples"))
def test_example_picks_spawn_behind_a_main_guard(script: str) -> None:
    """Importing the script only defines things, so a spawned child can run it."""
    source = (ROOT / script).read_text()
    body = ast.parse(source).body
    guards = [
        node
        for node in body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"
    ]
    assert len(guards) == 1
    definitions = (ast.Import, ast.ImportFrom, ast.FunctionDef)
    for node in body:
        if node in guards or isinstance(node, definitions):
            continue
        value = getattr(node, "value", None)  # a docstring or a constant
        assert isinstance(node, (ast.Expr, ast.Assign)), ast.unparse(node)
        assert isinstance(value, ast.Constant), ast.unparse(node)
    assert 'multiprocessing.get_context("spawn")' in source


def test_readme_example_is_the_quickstart_script() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^```python\n(.*?)^```$", readme, flags=re.M | re.S)
    assert block is not None
    assert block[1] == (ROOT / "docs/examples/quickstart.py").read_text()
