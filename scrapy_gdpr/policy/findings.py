"""What is wrong with a policy file, where, and how to fix it: :class:`Finding` and :class:`PolicyError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Finding:
    """One problem found in a policy file."""

    file: str
    line: int | None
    path: str
    message: str
    fix: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}: {self.severity}:{key} {self.message} (fix: {self.fix})"


class PolicyError(ValueError):
    """The policy file is missing or invalid; ``findings`` lists every problem."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        errors = [f for f in findings if f.severity == "error"]
        head = (
            f"Invalid GDPR policy {errors[0].file}: {len(errors)} error(s)"
            if errors
            else "Invalid GDPR policy"
        )
        super().__init__("\n".join([head, *(f"  {f}" for f in errors)]))


def _format_path(path: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...] | list[Any]) -> int | None:
    path = tuple(path)
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]
