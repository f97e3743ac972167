"""Schema errors in the words of the policy file: the path, the problem and its fix.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from scrapy_gdpr.policy.findings import Finding, _format_path, _line_for
from scrapy_gdpr.policy.model import Policy

if TYPE_CHECKING:
    from collections.abc import Mapping


def _model_for_path(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``path`` (to list its allowed keys)."""
    model: Any = Policy
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        model = _inner_model(info.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args:
        found = _inner_model(arg)
        if found is not None:
            return found
    meta = getattr(annotation, "__origin__", None)
    if meta is not None and isinstance(meta, type) and issubclass(meta, BaseModel):
        return meta
    return None


_FIXES = {
    "missing": "add this key",
    "string_type": "write a text value (quote it if it looks like a number or true/false)",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "float_parsing": "write a number",
    "float_type": "write a number",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "date_from_datetime_parsing": "write the date as YYYY-MM-DD",
    "date_parsing": "write the date as YYYY-MM-DD",
    "date_type": "write the date as YYYY-MM-DD",
    "list_type": "write a list (lines starting with '- ')",
    "dict_type": "write a mapping of 'key: value' lines",
    "model_type": "write a mapping of 'key: value' lines",
    "model_attributes_type": "write a mapping of 'key: value' lines",
    "too_short": "add at least one entry",
    "greater_than_equal": "use a larger value",
    "less_than_equal": "use a smaller value",
    "greater_than": "use a larger value",
    "less_than": "use a smaller value",
    "string_pattern_mismatch": "use only the allowed characters",
    "finite_number": "write a finite number (not .inf or .nan)",
}


#: Plain words for the patterns of the model, used in messages instead of the regex.
_PATTERNS = {
    r"^[a-z0-9][a-z0-9_.-]*$": "lower-case letters, digits, '_', '.' and '-', starting with a letter or digit",
    r"^[A-Za-z_-]+$": "letters, '_' and '-' only (no digits, spaces or '/')",
    r"^\.?[a-z0-9-]+$": "a lower-case top-level domain such as 'cn' or '.cn'",
}


def _fix_for(err: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if "fix" in ctx:
        return str(ctx["fix"])
    if kind == "extra_forbidden":
        owner = _model_for_path(loc[:-1])
        allowed = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            return f"did you mean '{close[0]}'? allowed keys here: {', '.join(allowed)}"
        return f"remove it; allowed keys here: {', '.join(allowed)}" if allowed else "remove it"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"use one of: {expected}"
    if kind == "value_error":
        return "correct the value as described"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return f"use {_PATTERNS[pattern]}" if pattern in _PATTERNS else f"use a value matching {pattern}"
    return _FIXES.get(kind, "correct the value")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds union-member and validator tags to locations; keep real keys only
    out = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in {"function-after", "str", "none", "lax-or-strict"}):
            continue
        out.append(part)
    return tuple(out)


def _schema_findings(data: Any, lines: dict[tuple[Any, ...], int], filename: str) -> tuple[Policy | None, list[Finding]]:
    try:
        return Policy.model_validate(data), []
    except ValidationError as exc:
        findings = []
        seen = set()
        for err in exc.errors(include_url=False):
            loc = _clean_loc(tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            elif err["type"] == "missing":
                msg = f"required key {loc[-1]!r} is missing"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            elif err["type"] == "string_pattern_mismatch":
                msg = f"{err.get('input')!r} is not in the allowed form"
            elif err["type"] in ("date_parsing", "date_from_datetime_parsing", "date_from_datetime_inexact"):
                reason = msg.split(", ", 1)[1] if ", " in msg else msg
                msg = f"{err.get('input')!r} is not a valid date ({reason})"
            else:
                shown = err["type"] != "policy_value" and "input" in err and not isinstance(err["input"], (dict, list))
                msg = f"{msg} (got {err['input']!r})" if shown else msg
            key = (loc, msg)
            if key in seen:
                continue
            seen.add(key)
            findings.append(Finding(filename, _line_for(lines, loc), _format_path(loc), msg, _fix_for(err, loc)))
        return None, findings
