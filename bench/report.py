"""Results of the parts and the table they print as."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Target:
    """One target of issue 6: a measured figure against a threshold."""

    name: str
    measured: float | None
    op: str  # ">=" or "<="
    threshold: float
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured >= self.threshold if self.op == ">=" else self.measured <= self.threshold

    def cells(self) -> list[str]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        measured = "-" if self.measured is None else f"{_num(self.measured)}{self.unit}"
        return [self.name, measured, f"{self.op} {_num(self.threshold)}{self.unit}", verdict, self.note]


@dataclass
class PartResult:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "columns": self.columns, "rows": self.rows,
                "targets": [dict(name=t.name, measured=t.measured, op=t.op, threshold=t.threshold, unit=t.unit,
                                 met=t.met, note=t.note) for t in self.targets],
                "notes": self.notes, "raw": self.raw}


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is not None:
        return f"{value:,.{digits}f}"
    return _num(value)


def table(columns: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    widths = [max(len(str(row[i])) if i < len(row) else 0 for row in [columns, *rows]) for i in range(len(columns))]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        return "\n".join(lines)

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = str(cell)
            out.append(text.ljust(widths[i]) if i == 0 or not _numeric(text) else text.rjust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(columns), rule, *(line(row) for row in rows)])


def _numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace(".", "").replace("%", "").replace("x", "").replace(" ", "")
    stripped = stripped.replace("MiB", "").replace("ms", "").replace("s", "").replace("/", "")
    return stripped.isdigit()


def render(parts: list[PartResult], header: list[str], markdown: bool = False) -> str:
    out = [*header, ""]
    targets: list[Target] = []
    for part in parts:
        out.append(f"## {part.title}" if markdown else f"== {part.title}")
        if part.rows:
            out.append(table(part.columns, part.rows, markdown))
        for note in part.notes:
            out.append(f"- {note}" if markdown else f"   * {note}")
        out.append("")
        targets.extend(part.targets)
    if targets:
        out.append("## Targets" if markdown else "== Targets")
        out.append(table(["target", "measured", "wanted", "verdict", "note"], [t.cells() for t in targets],
                         markdown))
    return "\n".join(out).rstrip() + "\n"
