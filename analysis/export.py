"""CSV export that a spreadsheet cannot turn into a formula.

Prompts and model outputs are attacker-controlled text; quoting alone does not stop a cell
like ``=HYPERLINK(...)`` from running when the file is opened. OWASP (CSV injection, ASVS
5.0 V1.2.10): prefix ``'`` to any cell that begins with ``=``, ``+``, ``-``, ``@``, tab,
carriage return or NUL.
"""

import csv
from collections.abc import Iterable, Mapping, Sequence
from typing import TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")


def csv_safe(value: object) -> object:
    """Return `value` unchanged unless it is a string a spreadsheet would read as a
    formula, in which case return it prefixed with ``'``. Numbers stay numbers (a negative
    number is data, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(rows: Iterable[Mapping[str, object]], fieldnames: Sequence[str], fp: TextIO) -> None:
    """Write `rows` (dicts keyed by `fieldnames`; missing keys give empty cells, other keys
    are ignored) as CSV with a header to the open text file `fp` (opened with
    ``newline=""``), every cell, header included, passed through `csv_safe`."""
    writer = csv.writer(fp)
    writer.writerow([csv_safe(name) for name in fieldnames])
    for row in rows:
        writer.writerow([csv_safe(row.get(name, "")) for name in fieldnames])
