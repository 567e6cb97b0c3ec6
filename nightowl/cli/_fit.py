"""Tables that never cut a word: drawn as is when they fit, else transposed, else as records.

`fit(table)` wraps a rich `Table`: when every column fits the terminal without cutting
a word it is drawn as is; else it is drawn transposed (rows become columns) when that
fits; else as records read top to bottom (one block per row: its first cell, then
``column  value`` lines). So no table shows ``…`` at 80 columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


class Fitted:
    """A table that turns vertical when a column would have to cut a word to fit."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Render the table as is, else transposed, else as records."""
        candidates = [self.table]
        if self.table.show_header and self.table.row_count:
            candidates.append(transposed(self.table))
        for table in candidates:
            if _size_columns(console, options, table):
                yield table
                return
        yield vertical(self.table)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """As wide as the table, at most the available width."""
        m = Measurement.get(console, options, self.table)
        return Measurement(min(m.minimum, options.max_width), min(m.maximum, options.max_width))


def _content_range(console: Console, options: ConsoleOptions, table: Table, i: int) -> tuple[
    int, int
]:
    col = table.columns[i]
    cells = [col.header, *col.cells] if table.show_header else list(col.cells)
    ms = [Measurement.get(console, options, c) for c in cells] or [Measurement(0, 0)]
    low, high = max(m.minimum for m in ms), max(m.maximum for m in ms)
    return (high if col.no_wrap else low), high


def _size_columns(console: Console, options: ConsoleOptions, table: Table) -> bool:
    """Give each column at least its longest word; False when that cannot fit.

    rich shrinks over-wide tables by evening out the widest columns, which can cut a
    word even when every longest word would fit; so widths are set here instead: each
    column its longest word, the space left shared in proportion to what each needs
    to avoid wrapping.
    """
    n = len(table.columns)
    left, right = table.padding[3], table.padding[1]
    chrome = n * (left + right) + ((n + 1) if table.box else 0)
    if not table.pad_edge:
        chrome -= left + right
    avail = options.max_width - chrome
    ranges = [_content_range(console, options, table, i) for i in range(n)]
    lows, highs = [r[0] for r in ranges], [r[1] for r in ranges]
    if sum(highs) <= avail:
        return True
    if sum(lows) > avail:
        return False
    spare, want = avail - sum(lows), [h - lo for lo, h in ranges]
    total = sum(want) or 1
    for col, lo, w in zip(table.columns, lows, want, strict=True):
        col.width = lo + (spare * w) // total
    return True


def _cells(table: Table) -> Iterator[list[Any]]:
    columns = [list(c.cells) for c in table.columns]
    for i in range(table.row_count):
        yield [col[i] if i < len(col) else "" for col in columns]


def transposed(table: Table) -> Table:
    """Rows become columns: the first column's cells head the columns, headers the rows."""
    out = Table(title=table.title, caption=table.caption)
    first = table.columns[0]
    out.add_column(first.header, style="bold", no_wrap=True)
    for cell in first.cells:
        out.add_column(cell, justify="right")
    rows = list(_cells(table))
    for j, col in enumerate(table.columns[1:], start=1):
        out.add_row(col.header, *(row[j] for row in rows))
    return out


def vertical(table: Table) -> Table:
    """The same rows as records: each row's first cell, then one line per other column."""
    out = Table(
        title=table.title, caption=table.caption, show_header=False, box=box.SIMPLE,
        title_justify="left", caption_justify="left",
    )
    out.add_column("field", style="bold", overflow="fold")
    out.add_column("value", overflow="fold")
    headers = [c.header for c in table.columns]
    for row in _cells(table):
        if not table.show_header:  # a key/value table already: keep its rows
            out.add_row(row[0], *row[1:2])
            continue
        out.add_row(Text.assemble(str(headers[0]), ": ", row[0]), "", end_section=False)
        for head, cell in zip(headers[1:], row[1:], strict=True):
            if str(cell):
                out.add_row(Text.assemble("  ", str(head)), cell)
        out.add_section()
    return out


def fit(table: Table) -> Fitted:
    """The table, drawn vertically when it does not fit the terminal (see `Fitted`)."""
    return Fitted(table)
