"""Sphinx configuration of fastrnn's documentation: the user guide (the .rst
pages here) and the API reference (the numpydoc docstrings of fastrnn's public
names, read from the installed fastrnn).

    pip install ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html
"""
import fastrnn

project = "fastrnn"
author = "the fastrnn developers"
copyright = "the fastrnn developers, MIT license"
version = release = fastrnn.__version__

extensions = ["sphinx.ext.autodoc", "numpydoc"]

# fastrnn.torch's reference imports PyTorch, which is optional (CI installs it):
# without it the module is read against autodoc's stand-in, which documents the
# same docstrings
try:
    import torch  # noqa: F401
except ImportError:
    autodoc_mock_imports = ["torch"]
exclude_patterns = ["_build"]

# signatures without annotations: the numpydoc sections give the types
autodoc_typehints = "none"
autodoc_member_order = "bysource"
# a class's methods are documented in full below it, not listed twice
numpydoc_show_class_members = False

html_theme = "alabaster"
html_theme_options = {"description": "Fast CPU RNN, LSTM and GRU layers for NumPy",
                      "fixed_sidebar": True}
html_static_path = []
