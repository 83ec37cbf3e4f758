"""help() teaches: every public name has numpydoc sections, and their examples run.

Every name in fastrnn.__all__ (and every public method of a public class)
has a summary line and the numpydoc sections that apply to it: Parameters
when it takes arguments, Returns when a function returns something, Raises
when it checks arguments, Examples on every class and function. Every
docstring example of fastrnn's modules runs as a doctest (those that import
an optional framework skip when it is absent). The modules of the dask, mpi
and torch extras are checked the same way when their packages are installed.
"""
import doctest
import importlib
import importlib.util
import inspect
import pkgutil
import re

import pytest

import fastrnn

# repr's helper, documented once on Module
SKIP_METHODS = {"extra_repr"}

# The modules of the optional extras (not imported by fastrnn) and the package
# each needs: without it, importing the module raises ImportError naming the
# extra, and its tests here skip saying so.
OPTIONAL = {"fastrnn.dask": "dask", "fastrnn.mpi": "mpi4py", "fastrnn.torch": "torch"}


def optional_modules():
    """The optional modules whose package is installed, imported."""
    return [importlib.import_module(name) for name, package in OPTIONAL.items()
            if importlib.util.find_spec(package) is not None]


def sections(obj):
    """The numpydoc section titles of obj's docstring."""
    doc = inspect.getdoc(obj) or ""
    return set(re.findall(r"^(\w[\w ]*)\n-{3,}$", doc, re.MULTILINE))


def arguments(fn):
    """fn's parameters other than self, *args and **kwargs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def returns_none(fn):
    annotation = inspect.signature(fn).return_annotation
    return annotation in (None, "None")


def public_objects():
    for name in fastrnn.__all__:
        obj = getattr(fastrnn, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield name, obj
    for module in optional_modules():
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name)


def missing_sections(name, obj, is_class):
    found = sections(obj)
    needed = ["Examples"]
    if arguments(obj.__init__ if is_class else obj):
        needed += ["Parameters", "Raises"]
    if not is_class and not returns_none(obj):
        needed.append("Returns")
    return [s for s in needed if s not in found]


@pytest.mark.parametrize("name,obj", list(public_objects()),
                         ids=[name for name, _ in public_objects()])
def test_public_names_have_numpydoc_sections(name, obj):
    is_class = inspect.isclass(obj)
    if is_class and obj.__init__ is object.__init__ or name == "Tape":
        pytest.skip("made by fastrnn, not constructed by the caller")
    assert (inspect.getdoc(obj) or "").strip(), f"{name}: no docstring"
    missing = missing_sections(name, obj, is_class)
    assert missing == [], f"{name}: no {', '.join(missing)} section"


@pytest.mark.parametrize("name,cls", [(n, o) for n, o in public_objects() if inspect.isclass(o)],
                         ids=[n for n, o in public_objects() if inspect.isclass(o)])
def test_public_methods_document_their_arguments(name, cls):
    bad = []
    for attr, member in inspect.getmembers(cls):
        if attr.startswith("_") and attr != "__call__" or attr in SKIP_METHODS:
            continue
        if not inspect.isfunction(member) or member.__module__.split(".")[0] != "fastrnn":
            continue
        doc = inspect.getdoc(member)
        if not doc:
            bad.append(f"{attr}: no docstring")
        elif arguments(member) and "Parameters" not in sections(member):
            bad.append(f"{attr}: no Parameters section for {arguments(member)}")
    assert bad == [], f"{name}: {bad}"


def modules():
    yield fastrnn
    for info in pkgutil.iter_modules(fastrnn.__path__, "fastrnn."):
        package = OPTIONAL.get(info.name)
        if package and importlib.util.find_spec(package) is None:
            yield pytest.param(None, id=info.name, marks=pytest.mark.skip(
                reason=f"{package} is not installed (pip install '.[{info.name[8:]}]')"))
        elif info.name not in ("fastrnn.__main__", "fastrnn.bench"):
            yield importlib.import_module(info.name)


@pytest.mark.parametrize("module", list(modules()), ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    threads = fastrnn.get_num_threads()     # set_num_threads' example sets 1
    try:
        run_doctests(finder.find(module, module.__name__), runner)
    finally:
        fastrnn.set_num_threads(threads)
    assert runner.failures == 0


def run_doctests(tests, runner):
    for test in tests:                      # the module's own objects only
        imported = {name.split()[0] for example in test.examples
                    for line in example.source.splitlines() if line.startswith("import ")
                    for name in line[len("import "):].split(",")}
        needs = imported & {"torch", "keras", "onnx", "onnxruntime"}
        if any(importlib.util.find_spec(package) is None for package in needs):
            continue      # an optional framework this machine does not have
        runner.run(test)
