"Sphinx configuration for the course site: the notebooks with their stored outputs, and the API from docstrings."
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "minillama"
author = "minillama authors"
extensions = ["myst_nb", "sphinx.ext.autodoc"]
html_theme = "sphinx_book_theme"
html_title = "minillama"
html_theme_options = {"show_toc_level": 2, "navigation_with_keys": False}
nb_execution_mode = "off"                   # render the outputs stored in the notebooks; no kernel, no network
nb_merge_streams = True
myst_heading_anchors = 3
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
