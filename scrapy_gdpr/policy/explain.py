"""The documentation of one policy field, from the policy's JSON Schema (the model's
descriptions), for ``scrapy gdpr-lint --explain KEY``."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from scrapy_gdpr.policy import policy_json_schema


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (and a nullable ``anyOf: [X, null]``) to the schema of the value."""
    seen = 0
    while seen < 20:
        seen += 1
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = {**schema["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1 and "$ref" in options[0]:
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **options[0]}
            continue
        break
    return node


def _children(schema: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Properties (and required keys) of a mapping, or of a list's items."""
    node = _resolve(schema, node)
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        node = _resolve(schema, node["items"])
    return node.get("properties", {}), list(node.get("required", []))


def all_keys() -> list[str]:
    """Every dotted key of a policy file (lists written without indices)."""
    schema = policy_json_schema()
    out: list[str] = []

    def walk(node: dict[str, Any], prefix: str, depth: int) -> None:
        if depth > 6:
            return
        props, _ = _children(schema, node)
        for key, sub in props.items():
            dotted = f"{prefix}.{key}" if prefix else key
            out.append(dotted)
            walk(sub, dotted, depth + 1)

    walk(schema, "", 0)
    return out


def _type_words(schema: dict[str, Any], node: dict[str, Any]) -> str:
    node = _resolve(schema, node)
    if "enum" in node:
        return "one of: " + ", ".join(map(str, node["enum"]))
    if "const" in node:
        return f"exactly {node['const']!r}"
    kinds = []
    for given in node.get("anyOf", [node]):
        option = _resolve(schema, given)
        kind = option.get("type")
        if kind == "array":
            inner = _type_words(schema, option.get("items", {})) if option.get("items") else "values"
            kinds.append(f"a list of ({inner})")
        elif kind == "object" and option.get("properties"):
            kinds.append("a section (mapping)")
        elif kind == "object":
            kinds.append("a mapping")
        elif kind == "null":
            continue
        elif "enum" in option:
            kinds.append("one of: " + ", ".join(map(str, option["enum"])))
        elif kind:
            kinds.append({"string": "text", "integer": "a whole number", "number": "a number",
                          "boolean": "true or false"}.get(kind, kind))
    return " or ".join(dict.fromkeys(kinds)) or "any value"


def explain(key: str) -> str | None:
    """The documentation of ``key`` (``faces.action``, ``domains[0].terms``), or None."""
    schema = policy_json_schema()
    parts = [p for p in re.sub(r"\[\d*\]", "", key.strip()).split(".") if p]
    if not parts or parts == ["policy"]:
        top, top_required = _children(schema, schema)
        lines = [f"{schema.get('title', 'policy')}: {schema.get('description', '')}".rstrip(), "", "Top-level keys:"]
        lines += [f"  {k}{' (required)' if k in top_required else ''}" for k in top]
        lines.append("")
        lines.append("Run 'scrapy gdpr-lint --explain KEY' for any of them.")
        return "\n".join(lines)
    node: dict[str, Any] = schema
    required: list[str] = []
    for part in parts:
        props, required = _children(schema, node)
        if part not in props:
            return None
        node = props[part]
    field = node
    value = _resolve(schema, node)
    lines = [key.strip()]
    description = field.get("description") or value.get("description")
    if description:
        lines.append(f"  {description}")
    lines.append(f"  Value: {_type_words(schema, field)}")
    bounds = []
    for option in [value, *[_resolve(schema, o) for o in value.get("anyOf", [])]]:
        for name, words in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                            ("exclusiveMaximum", "<"), ("minLength", "length >="), ("maxLength", "length <="),
                            ("minItems", "entries >=")):
            if name in option:
                bounds.append(f"{words} {option[name]}")
    if bounds:
        lines.append(f"  Limits: {', '.join(dict.fromkeys(bounds))}")
    lines.append("  Required: yes" if parts[-1] in required else
                 f"  Default: {json.dumps(field['default'], ensure_ascii=False)}" if "default" in field else
                 "  Required: no")
    props, sub_required = _children(schema, field)
    if props:
        lines.append("  Keys: " + ", ".join(f"{k}{' (required)' if k in sub_required else ''}" for k in props))
    return "\n".join(lines)


def suggestions(key: str) -> list[str]:
    bare = re.sub(r"\[\d*\]", "", key.strip())
    keys = all_keys()
    close = difflib.get_close_matches(bare, keys, n=3, cutoff=0.6)
    last = bare.rsplit(".", 1)[-1]
    close += [k for k in keys if k.rsplit(".", 1)[-1] == last and k not in close]
    return close[:5]
