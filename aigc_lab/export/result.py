"""``ExportResult``: what an export wrote and the command that serves it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExportResult:
    """The files written (the main one first), the serving command, and facts about the export."""

    target: str
    path: Path
    files: tuple[Path, ...]
    command: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        """Size of everything written, in MB."""
        sizes = [f.stat().st_size for p in self.files for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
        return sum(sizes) / 1e6

    def __str__(self) -> str:
        serve = f"\n  serve it: {self.command}" if self.command else ""
        return f"exported {self.target} to {self.path} ({self.size_mb:.1f} MB){serve}"

    def _repr_html_(self) -> str:
        cmd = f"<br>serve it: <code>{html.escape(self.command)}</code>" if self.command else ""
        return f"<div>exported <b>{html.escape(self.target)}</b> to <code>{html.escape(str(self.path))}</code> " \
               f"({self.size_mb:.1f} MB){cmd}</div>"
