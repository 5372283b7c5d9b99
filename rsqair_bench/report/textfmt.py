"""Text that goes into reports and file names: numbers of any size, and names from metrics.json.

Why: a model or `paper_name` comes from a file, so it may hold `|` (which splits a Markdown table
cell), HTML, backticks or a newline; it was written raw into `compare.md`, `table.md` and
`table.tex`, and a very long one became a GIF file name the filesystem refused, leaving the report
half-written. A score of 1e308 printed as a 309-digit cell. The names the benchmark itself uses
(`R-SQAIR(IN)`, `sqair+in`) and scores of normal size come out exactly as before.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

FIXED_LIMIT = 1e9  # below this a score prints in fixed point (as always); from here on in scientific notation
FILE_PART_BYTES = 80  # longest name part in a file name (a file name may have 255 bytes)
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.+()-]")


def fixed(value: float, digits: int = 2, sign: bool = False) -> str:
    """`value` with `digits` decimals, or in scientific notation when its magnitude is FIXED_LIMIT or more."""
    plus = "+" if sign else ""
    if math.isfinite(value) and abs(value) >= FIXED_LIMIT:
        return f"{value:{plus}.{digits + 1}e}"
    return f"{value:{plus}.{digits}f}"


def markdown_name(text: object) -> str:
    """A name as Markdown table-cell text: no raw HTML, no code spans, no cell breaks, one line."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return " ".join(out.splitlines()) if ("\n" in out or "\r" in out) else out


def file_name_part(text: object) -> str:
    """`text` as part of a file name. Safe names are kept as they are; otherwise unsafe characters (`/`,
    spaces, ...) become `_`, a long name is cut, and a hash of the original is appended, so that two
    names never share a file."""
    raw = str(text)
    out = _UNSAFE_FILE_CHARS.sub("_", raw).lstrip(".")
    if out == raw and len(out) <= FILE_PART_BYTES:
        return out
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]  # "a/b" and "a_b" must not share a file
    return f"{out[:FILE_PART_BYTES - 11]}-{digest}"


NAME_COLUMNS = ("model",)  # the columns (or index) that hold names read from files


def markdown_table(table: pd.DataFrame, index: bool = True) -> str:
    """`table.to_markdown(...)` (as every report writes it) with the names in it escaped (`markdown_name`):
    the index, and the `model` column. Numbers and the other cells are the report's own text, untouched."""
    shown = table.copy()
    for column in NAME_COLUMNS:
        if column in shown.columns:
            shown[column] = [markdown_name(v) for v in shown[column]]
    if index:
        shown.index = shown.index.map(lambda v: tuple(markdown_name(x) for x in v) if isinstance(v, tuple) else markdown_name(v))
    return shown.to_markdown(index=index, disable_numparse=True)
