"""A plain table (column names + rows) and its CSV file, shared by metrics, studies and aggregation scripts."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advmed.utils.files import write_text


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Any]]

    def column(self, name: str) -> list[Any]:
        """The values of column ``name``, in row order."""
        i = self.columns.index(name)
        return [row[i] for row in self.rows]


def write_csv(path: str | Path, table: Table) -> Path:
    """Write ``table`` as CSV (header row first), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return write_text(path, buffer.getvalue())
