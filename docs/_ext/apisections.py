"""What the API section of a primitive's page shows, beyond autodoc's defaults.

**Members.** conf.py makes autodoc list a module's members in source order,
which reads from the protocol down to the ways; told to ignore ``__all__``
for that order, autodoc would also take it as leave to document any public
name with a docstring, so :func:`outside_all` skips what ``__all__`` does not
export (a type alias such as ``shmref.channel.Message``).

**Bases.** A way's class derives from the machinery its module shares
(``_ArrayBase``, ``_Primitive``) and from ``shmref.lifecycle.Closable``, none
of which the pages document: a "Bases:" line naming them points nowhere.
:func:`shown` keeps a base when the reader can do something with it: catch
it (``ValueError``), implement it (``Protocol``, ``Generic[T]``), find it in
the standard library (``BaseManager``) or in the same section
(``UnsafeMetrics`` is a ``CtypesMetrics``). A class left with no base shows
no "Bases:" line.
"""

from __future__ import annotations

import sys
from typing import Any

from docutils import nodes
from sphinx.locale import _

PACKAGE = "shmref"


def shown(cls: type, base: Any) -> bool:
    """Whether ``cls``'s API entry names ``base`` among its bases."""
    if base is object:
        return False
    name = getattr(base, "__name__", "")
    module = getattr(base, "__module__", "")
    if name.startswith("_"):
        return False
    if module.split(".")[0] != PACKAGE:
        return True  # the standard library's, or typing's Generic[T]
    # Another module's base is shared machinery no page documents.
    return module == cls.__module__


def keep_shown_bases(app: Any, name: str, cls: type, options: Any, bases: list[Any]) -> None:
    bases[:] = [base for base in bases if shown(cls, base)]


def drop_empty_bases(app: Any, domain: str, objtype: str, content: nodes.Element) -> None:
    """Remove the "Bases:" paragraph autodoc writes even when no base is left."""
    empty = (_("Bases: %s") % "").strip()
    for paragraph in content.findall(nodes.paragraph):
        if paragraph.astext().strip() == empty:
            paragraph.parent.remove(paragraph)
        break  # the bases line is the first paragraph, if any


def outside_all(app: Any, what: str, name: str, obj: Any, skip: bool, options: Any) -> bool | None:
    """Skip a module's member that its ``__all__`` does not export."""
    if what != "module":
        return None
    # autodoc records the module whose members it is choosing.
    module = sys.modules.get(app.env.current_document.autodoc_module)
    exported = getattr(module, "__all__", None)
    if exported is None or name in exported:
        return None
    return True


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-bases", keep_shown_bases)
    app.connect("object-description-transform", drop_empty_bases)
    app.connect("autodoc-skip-member", outside_all)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
