"""Write one primitive as a single file to copy: ``python -m shmref.standalone NAME``.

Like SQLite's amalgamation: shmref is developed as a package whose shared
machinery (:mod:`shmref.lifecycle`, :mod:`shmref.owner`,
:mod:`shmref.server`, :mod:`shmref.keyspace`, :mod:`shmref.segment`) exists
once, and the file a user copies is generated from it. The generated file
holds the machinery the primitive imports, then the primitive's module, with
the imports between them removed and the standard-library imports gathered
at the top. It imports nothing from shmref, and nothing outside the standard
library until a Redis way is made (``redis``, imported inside a function).
Never edit it: fix the package and generate it again.

NAME is a primitive module (``counter``, ``value``, ``arrays``,
``metrics``, ``locks``, ``table``, ``channel``). ``-o FILE`` writes there
(default: standard output). The file keeps the module's name as its stem:
``arrays.py``, not ``array.py``, which would shadow the standard library.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import shmref

PACKAGE = Path(__file__).resolve().parent

#: The primitive modules, in the order of the docs' menu.
PRIMITIVES = ("counter", "value", "arrays", "metrics", "locks", "table", "channel")

#: The shared machinery, each module after the ones it imports.
MACHINERY = ("lifecycle", "holder", "wakeup", "owner", "server", "keyspace", "segment")


class _Module:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (PACKAGE / f"{name}.py").read_text()
        self.tree = ast.parse(self.source)
        self.uses: list[str] = []  # shmref modules imported, in order
        self.imports: list[ast.Import | ast.ImportFrom] = []  # standard library
        self.body: list[str] = []  # everything else, as source text
        lines = self.source.splitlines()
        nodes = list(self.tree.body)
        if nodes and isinstance(nodes[0], ast.Expr) and isinstance(nodes[0].value, ast.Constant):
            self.docstring = ast.get_docstring(self.tree) or ""
            nodes = nodes[1:]
        else:
            self.docstring = ""
        previous_end = nodes[0].lineno - 1 if nodes else 0
        if self.docstring:
            previous_end = self.tree.body[0].end_lineno or 0
        for node in nodes:
            # The comments above a statement belong to it (#: doc-comments).
            text = "\n".join(lines[previous_end : node.end_lineno]).strip("\n")
            previous_end = node.end_lineno or previous_end
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shmref"):
                used = (node.module or "").removeprefix("shmref").lstrip(".")
                if not used or any(alias.asname for alias in node.names):
                    raise SystemExit(
                        f"shmref/{name}.py:{node.lineno}: import names from a shmref "
                        "module without 'as', so that the generated file can merge them"
                    )
                self.uses.append(used)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports.append(node)
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "__all__"
                and name in MACHINERY
            ):
                continue  # the primitive's __all__ is the file's
            else:
                self.body.append(text)

    def names(self) -> set[str]:
        """Top-level names this module defines."""
        found: set[str] = set()
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found |= {t.id for t in targets if isinstance(t, ast.Name)}
        return found - {"__all__"}


def _start(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return int(min([node.lineno, *(d.lineno for d in decorators)]))


def _needed(primitive: str) -> list[str]:
    """The machinery modules ``primitive`` needs, in dependency order."""
    needed: set[str] = set()
    todo = [primitive]
    while todo:
        for used in _Module(todo.pop()).uses:
            if used not in needed:
                needed.add(used)
                todo.append(used)
    unknown = needed - set(MACHINERY)
    if unknown:
        raise SystemExit(f"{primitive} imports shmref modules that are not machinery: {unknown}")
    return [name for name in MACHINERY if name in needed]


def generate(primitive: str) -> str:
    """The standalone source of ``primitive``."""
    if primitive not in PRIMITIVES:
        raise SystemExit(f"unknown primitive {primitive!r}; choose one of {', '.join(PRIMITIVES)}")
    modules = [_Module(name) for name in (*_needed(primitive), primitive)]
    seen: dict[str, str] = {}
    for module in modules:
        for defined in module.names():
            if defined in seen:
                raise SystemExit(
                    f"{defined!r} is defined in both shmref/{seen[defined]}.py and "
                    f"shmref/{module.name}.py: one generated file cannot hold both"
                )
            seen[defined] = module.name
    plain: set[str] = set()
    names: dict[str, set[str]] = {}
    for module in modules:
        for node in module.imports:
            if isinstance(node, ast.Import):
                plain |= {alias.name for alias in node.names}
            else:
                names.setdefault(node.module or "", set()).update(a.name for a in node.names)
    imports = [f"import {name}" for name in sorted(plain)]
    imports += [f"from {mod} import {', '.join(sorted(names[mod]))}" for mod in sorted(names)]
    main = modules[-1]
    parts = [
        f'"""{main.docstring}\n\n'
        f"Generated by ``python -m shmref.standalone {primitive}`` from shmref "
        f"{shmref.__version__}: do not edit. It holds shmref's shared machinery "
        f"({', '.join(m.name for m in modules[:-1]) or 'none'}) and shmref/{primitive}.py, "
        'and imports only the standard library.\n"""',
        "from __future__ import annotations",
        "\n".join(imports),
    ]
    for module in modules:
        parts.append(f"# {'-' * 30} from shmref/{module.name}.py\n\n" + "\n\n\n".join(module.body))
    return "\n\n\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shmref.standalone",
        description="Write one shmref primitive as a single file that imports only the "
        "standard library.",
    )
    parser.add_argument("name", choices=PRIMITIVES, help="the primitive module")
    parser.add_argument("-o", "--output", help="the file to write (default: standard output)")
    options = parser.parse_args(argv)
    text = generate(options.name)
    if options.output:
        Path(options.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
