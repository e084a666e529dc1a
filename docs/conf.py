"""Sphinx configuration: the documentation and an API reference from the docstrings.

Built by ``.ci/run`` with ``sphinx-build -W -b html docs <dir>`` (warnings are errors);
``pip install '.[docs]'`` installs Sphinx.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # autodoc imports mbroker from this checkout

import mbroker  # noqa: E402  (after the path is set)

project = "mbroker"
author = "the mbroker authors"
release = version = mbroker.__version__  # the one place the version is written

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}  # no network at build time

root_doc = "index"
exclude_patterns = ["_build"]
# The tutorial's programs live beside its text; only .rst files are documents.
source_suffix = {".rst": "restructuredtext"}

# Type hints are shown in the signatures; a name Sphinx cannot link is left as text
# (nitpicky is off: Twisted's and attrs' types have no inventory offline).
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False

html_theme = "alabaster"
html_static_path: list[str] = []
