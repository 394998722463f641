"""Sphinx extension: write every primitive's standalone file for the pages to link.

At each build, ``python -m shmref.standalone NAME`` runs (as a function) for
every primitive and writes ``docs/_generated/standalone/NAME.py``, plus the
markdown part each page includes: the download link and the command. The
files are generated, never committed, so the pages always offer what the
package would generate now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shmref.standalone import PRIMITIVES, generate

DOCS = Path(__file__).resolve().parent.parent
OUT = DOCS / "_generated" / "standalone"

PART = """\
Generated from the package, one file that imports only the standard library
({optional}): {{download}}`download {name}.py </_generated/standalone/{name}.py>`
({lines} lines), or make it yourself from an installed shmref:

```console
$ python -m shmref.standalone {name} -o {name}.py
```

Keep the name `{name}.py`: under spawn, children import the file by its name
to find the functions they run. The file is tested alone, under spawn, with
shmref not installed (`tests/test_standalone.py`); fix the package, never the
copy, and generate it again.
"""


def write() -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PRIMITIVES:
        text = generate(name)
        path = OUT / f"{name}.py"
        path.write_text(text)
        optional = "numpy optional" if name == "arrays" else "nothing optional"
        part = PART.format(name=name, lines=text.count("\n"), optional=optional)
        (OUT / f"{name}.md").write_text(part)
        written.append(path)
    return written


def _on_init(app: Any) -> None:
    write()


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _on_init)
    return {"parallel_read_safe": True}
