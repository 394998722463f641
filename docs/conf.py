"""Sphinx configuration for the shmref documentation."""

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import shmref  # noqa: E402

project = "shmref"
author = "the shmref developers"
copyright = "2026, the shmref developers"
release = version = shmref.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.graphviz",
    "sphinx_copybutton",
    "benchreport",
    "standalonefiles",
    "guarantees",
    "choose",
    "apisections",
    "peers",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_generated", "bench", "README.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

# Members in the order of the source, which reads from the protocol down to
# the ways (with __all__ autodoc follows __all__'s order, which ruff sorts);
# apisections.py keeps them to __all__ and the bases to those a reader can use.
# "show-inheritance": False would turn the flag on: autodoc reads any value as
# the flag given. A way's methods have no docstrings (its protocol says what
# they do): "undoc-members" lists them with their signatures all the same.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {
    "members": True,
    "ignore-module-all": True,
    "show-inheritance": True,
    "undoc-members": True,
}

# Examples start real processes; targets come from shmref so they work
# under spawn and forkserver as well as fork.
doctest_test_doctest_blocks = ""

html_theme = "furo"
html_title = f"shmref {release}"
html_static_path = ["_static"]
html_css_files = ["tables.css"]
# ">>> " and "... " in examples, "$ " in console transcripts: copy the commands only.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
