"""The API sections of the primitive pages, as autodoc renders them with docs/conf.py.

One small Sphinx project holds every primitive module's ``automodule`` with the
docs' autodoc settings and docs/_ext/apisections.py, built once as plain text:
the full docs build takes far longer and renders the same entries.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PACKAGE = DOCS.parent / "shmref"
MODULES = ["counter", "value", "arrays", "metrics", "locks", "table", "channel"]


# Sphinx is a docs dependency, not a test one: nox -s docs runs this file.
pytest.importorskip(
    "sphinx", reason="sphinx is not installed: pip install -e .[docs] (nox -s docs runs these)"
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The text of every primitive module's API section."""
    from sphinx.application import Sphinx

    src = tmp_path_factory.mktemp("api")
    (src / "conf.py").write_text(
        "import runpy\n"
        f"docs = runpy.run_path({str(DOCS / 'conf.py')!r})\n"
        'globals().update({k: v for k, v in docs.items() if k.startswith("autodoc_")})\n'
        'extensions = ["sphinx.ext.autodoc", "apisections"]\n'
    )
    (src / "index.rst").write_text(
        "API\n===\n\n" + "".join(f".. automodule:: shmref.{name}\n\n" for name in MODULES)
    )
    out = src / "_build"
    app = Sphinx(src, src, out, out / ".doctrees", "text", status=None, warningiserror=True)
    app.build()
    return (out / "index.txt").read_text()


def _defined(module: str) -> list[str]:
    """The module's top-level names in the order the source defines them."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names = []
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def test_members_are_in_source_order_and_exported(api: str) -> None:
    for module in MODULES:
        shown = re.findall(rf"^(?:class |exception )?shmref\.{module}\.(\w+)\b", api, re.M)
        assert shown, module
        exported = __import__(f"shmref.{module}", fromlist=["__all__"]).__all__
        assert set(shown) <= set(exported), (module, set(shown) - set(exported))
        defined = _defined(module)
        assert shown == sorted(shown, key=defined.index), module


def test_bases_name_nothing_the_pages_do_not_document(api: str) -> None:
    bases = re.findall(r"^\s*Bases:(.*)$", api, re.M)
    assert bases  # a Protocol's, a manager's, an exception's
    for line in bases:
        names = re.findall(r'"(\w+)"', line)
        assert names, "an empty Bases: line"
        assert not any(n.startswith("_") or n in ("object", "Closable") for n in names), line


def test_values_that_differ_between_machines_are_not_dumped(api: str) -> None:
    assert "<class 'ctypes." not in api
    assert re.search(r"^shmref\.value\.TYPES: dict\[str, type\[Any\]\]$", api, re.M)
    assert re.search(r"^shmref\.arrays\.MAX_BYTES$", api, re.M)
