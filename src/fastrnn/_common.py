"""What fastrnn's training pieces (nn, losses, optim) share: docstring texts
written once, and the check of a mapping's names."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence, TypeVar

_T = TypeVar("_T")


def _check_names(name: str, given: Mapping[str, Any], expected: Sequence[str]) -> None:
    """ValueError when the mapping ``given`` (the argument ``name``) has not
    exactly the names ``expected``, saying which are missing and unexpected."""
    missing = [k for k in expected if k not in given]
    names = set(expected)
    unexpected = [k for k in given if k not in names]
    if missing or unexpected:
        got = [f"missing {missing}"] * bool(missing) + \
            [f"unexpected {unexpected}"] * bool(unexpected)
        raise ValueError(f"{name}: expected the names {list(expected)}, got "
                         f"{' and '.join(got)}")


def _fill_docs(docs: Dict[str, str]) -> Callable[[_T], _T]:
    """A decorator filling the ``%(key)s`` fields of a docstring from docs, so
    that a text several classes share is written once (the layers' _doc)."""
    def fill(obj: _T) -> _T:
        if obj.__doc__:   # None under python -OO
            obj.__doc__ = obj.__doc__ % docs
        return obj
    return fill
