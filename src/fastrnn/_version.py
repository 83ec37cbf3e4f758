"""The version of fastrnn: the one place it is written (pyproject.toml reads it for the
wheel's and the sdist's metadata; CHANGELOG.md has a section for it)."""
__version__ = "0.1.0"
