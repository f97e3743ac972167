"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``."""

project = "scrapy-gdpr"
author = "scrapy-gdpr contributors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = "scrapy-gdpr"
