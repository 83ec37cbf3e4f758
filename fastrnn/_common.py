"""What fastrnn's training pieces (nn, losses, optim) share: docstring texts
written once."""
from __future__ import annotations

from typing import Callable, Dict, TypeVar

_T = TypeVar("_T")


def _fill_docs(docs: Dict[str, str]) -> Callable[[_T], _T]:
    """A decorator filling the ``%(key)s`` fields of a docstring from docs, so
    that a text several classes share is written once (the layers' _doc)."""
    def fill(obj: _T) -> _T:
        if obj.__doc__:   # None under python -OO
            obj.__doc__ = obj.__doc__ % docs
        return obj
    return fill
