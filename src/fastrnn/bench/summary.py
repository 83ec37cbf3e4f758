"""The compact tables of ``pytest --benchmark``: one table per cell (or per other
subject), rows the shapes and modes, columns the implementations, then the ratios.

bench/conftest.py records the round times pytest-benchmark measured for each
(table, row, column) and prints ``format_tables`` at the end of the run. Every time
is in ms per call, the median over rounds with its spread, ``±`` half the
interquartile range in percent of the median (half the rounds lie within it). A
ratio is the median of one column over the median of another, its spread the two
spreads combined (root of the sum of squares): ``numpy/c`` 12.9x means fastrnn's C
kernels take 1/12.9 of the NumPy reference's time; ``best peer/c`` is the fastest
peer (torch, onnxruntime) over fastrnn c, > 1 when fastrnn is faster.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

Samples = Sequence[float]          # seconds per call, one per round


@dataclasses.dataclass(frozen=True)
class Layout:
    """The columns of one kind of table and its ratios: (label, numerator columns,
    denominator column); of several numerator columns the fastest one counts, and
    its name is printed after the ratio."""

    columns: Tuple[str, ...]
    ratios: Tuple[Tuple[str, Tuple[str, ...], str], ...]


# fastrnn's two backends and its peers, one table per cell kind
CELL = Layout(columns=("c", "numpy", "torch", "onnxruntime"),
              ratios=(("numpy/c", ("numpy",), "c"),
                      ("best peer/c", ("torch", "onnxruntime"), "c")))
SHORT = {"onnxruntime": "ort"}     # peer names after a best-peer ratio


def median_spread(samples: Samples) -> Tuple[float, float]:
    """The median and half the interquartile range relative to it (0.03: ±3%)."""
    values = sorted(samples)
    median = statistics.median(values)
    if len(values) < 2 or median <= 0:
        return median, 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, (q3 - q1) / 2 / median


def ms(seconds: float) -> str:
    """Milliseconds with three or four significant digits, the same unit everywhere."""
    value = 1e3 * seconds
    if value < 10:
        return f"{value:.3f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:.0f}"


def _pct(spread: float) -> str:
    return f"{'±' + format(100 * spread, '.0f') + '%':>4}"


def ratio(numerators: Dict[str, Samples], denominator: Samples
          ) -> Optional[Tuple[float, float, str]]:
    """(ratio of medians, its relative spread, the numerator used): the fastest of the
    numerator columns present over the denominator; None if one side is missing."""
    present = {name: median_spread(s) for name, s in numerators.items() if s}
    if not present or not denominator:
        return None
    name = min(present, key=lambda n: present[n][0])
    (num, num_spread), (den, den_spread) = present[name], median_spread(denominator)
    if den <= 0:
        return None
    return num / den, math.hypot(num_spread, den_spread), name


def format_table(title: str, layout: Layout, rows: Dict[str, Dict[str, Samples]]) -> List[str]:
    """One table: a title line, a header, one line per row (in the given order);
    columns no row has are left out."""
    columns = [c for c in layout.columns if any(c in cells for cells in rows.values())]
    header = ["", *columns, *(label for label, _, _ in layout.ratios)]
    lines = []
    for label, cells in rows.items():
        line = [label]
        for column in columns:
            if column in cells:
                median, spread = median_spread(cells[column])
                line.append(f"{ms(median)} {_pct(spread)}")
            else:
                line.append("-")
        for _, numerators, denominator in layout.ratios:
            got = ratio({n: cells[n] for n in numerators if n in cells}, cells.get(denominator, ()))
            if got is None:
                line.append("-")
            else:
                value, spread, name = got
                tag = f" {SHORT.get(name, name):<5}" if len(numerators) > 1 else ""
                line.append(f"{value:.2f}x {_pct(spread)}{tag}")
        lines.append(line)
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    text = [title]
    for r in [header] + lines:
        text.append("  ".join([r[0].ljust(widths[0])]
                              + [cell.rjust(w) for cell, w in zip(r[1:], widths[1:])]).rstrip())
    return text


def format_tables(tables: Dict[str, Tuple[Layout, Dict[str, Dict[str, Samples]]]]
                  ) -> List[str]:
    """Every table, in the given order, a blank line between them."""
    out: List[str] = []
    for title, (layout, rows) in tables.items():
        if out:
            out.append("")
        out += format_table(title, layout, rows)
    return out
