"""Reading a policy file: bounded YAML with line numbers, validation, the fingerprint.

:func:`load_policy` reads a file, :func:`validate_policy_text` checks text; both report
every problem as a :class:`~scrapy_gdpr.policy.findings.Finding` with its line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from scrapy_gdpr.policy.findings import Finding, PolicyError, _format_path
from scrapy_gdpr.policy.lint import _rule_findings
from scrapy_gdpr.policy.model import MAX_DEPTH, MAX_POLICY_BYTES, MAX_VALUES, SCHEMA_PATH, Policy
from scrapy_gdpr.policy.schema_errors import _schema_findings

#: Where a user of the installed package reads about every field.
FIELD_HELP = f"'scrapy gdpr-lint --explain KEY' describes each field; the JSON Schema is {SCHEMA_PATH}"


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader with YAML 1.2 scalars: only true/false are booleans, dates stay strings.

    YAML 1.1 reads ``no`` (Norway's country code) as False and ``2026-01-01`` as a date
    object; a policy file must mean what a person reading it sees.
    """


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """:class:`_Loader`'s rules on libyaml's parser where PyYAML has it (about five
    times faster: a policy at the size limit is refused in seconds, not a minute)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _yaml_finding(exc: yaml.YAMLError, filename: str) -> Finding:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    if problem.startswith("did not find expected "):
        problem = problem[len("did not find ") :]  # libyaml's wording of PyYAML's message
    if "maximum nesting depth" in problem:
        return _depth_finding(filename, line)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        problem += f" ({context} on line {context_mark.line + 1})"
    return Finding(filename, line, "", f"the file is not valid YAML: {problem}", "correct the YAML syntax at that line")


def _compose(text: str, filename: str) -> tuple[Any, dict[tuple[Any, ...], int], list[Finding]]:
    """Parse YAML to plain data plus a map of key path -> line, noting duplicate keys.

    Every failure is a finding, never an exception: a file too large, a NUL byte,
    nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values.
    """
    findings: list[Finding] = []
    lines: dict[tuple[Any, ...], int] = {}
    if len(text) > MAX_POLICY_BYTES:
        findings.append(Finding(filename, None, "", f"the policy is more than {MAX_POLICY_BYTES:,} characters long",
                                "a policy needs a few kilobytes: check that this is the right file"))
        return None, lines, findings
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        findings.append(Finding(filename, line, "", "the policy contains a NUL byte (it is not a text file)",
                                "save the policy as plain UTF-8 text"))
        return None, lines, findings
    depth_line = _too_deep(text)
    if depth_line is not None:
        findings.append(_depth_finding(filename, depth_line))
        return None, lines, findings
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        findings.append(_yaml_finding(exc, filename))
        return None, lines, findings
    except RecursionError:
        findings.append(_depth_finding(filename, None))
        return None, lines, findings
    finally:
        loader.dispose()
    if node is None:
        return None, lines, findings

    built = 0
    seen_nodes: set[int] = set()
    aliased = False

    def build(n: yaml.Node, path: tuple[Any, ...]) -> Any:
        nonlocal built, aliased
        built += 1
        if id(n) in seen_nodes:
            aliased = True  # a node reached twice: an '*alias'
        seen_nodes.add(id(n))
        if built > MAX_VALUES:
            # '*alias' references can make a small file expand without bound
            raise _TooManyValues(n.start_mark.line + 1)
        if len(path) > MAX_DEPTH:
            raise _TooDeep(n.start_mark.line + 1)
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) and n.tag not in _COLLECTION_TAGS:
            # the safe loader would refuse it; so do we (it is never constructed)
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {n.tag!r}", n.start_mark
            )
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            # ``<<: *anchor`` merge keys first, so that keys written out override them
            for key_node, value_node in n.value:
                if key_node.tag != _MERGE_TAG:
                    continue
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        findings.append(Finding(filename, key_node.start_mark.line + 1, _format_path(path),
                                                "'<<' must refer to a mapping (an '&anchor' on a section)",
                                                "refer to a section, e.g. '<<: *contact'"))
                        continue
                    for key, value in build(source, path).items():
                        out.setdefault(key, value)
            merged = set(out)
            for key_node, value_node in n.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    findings.append(
                        Finding(filename, key_node.start_mark.line + 1, _format_path(path),
                                "a key must be a plain word", "write the key as plain text")
                    )
                    continue
                if key in merged:
                    merged.discard(key)
                elif key in out:
                    findings.append(
                        Finding(
                            filename,
                            key_node.start_mark.line + 1,
                            _format_path((*path, key)),
                            f"key {key!r} appears twice in the same section (first on line {lines[(*path, key)]})",
                            "keep one of the two entries",
                        )
                    )
                    continue
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(child, (*path, i)) for i, child in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    try:
        return build(node, ()), lines, findings
    except _TooManyValues as exc:
        if aliased:
            findings.append(Finding(
                filename, exc.line, "",
                f"the file expands to more than {MAX_VALUES:,} values (through '*alias' references)",
                "write the policy out without nested '&anchor'/'*alias' references; a policy needs far fewer values",
            ))
        else:
            findings.append(Finding(
                filename, exc.line, "", f"the file holds more than {MAX_VALUES:,} values",
                "a policy needs a few hundred values: check that this is the right file",
            ))
        return None, lines, findings
    except _TooDeep as exc:
        findings.append(_depth_finding(filename, exc.line))
        return None, lines, findings
    except RecursionError:
        findings.append(_depth_finding(filename, None))
        return None, lines, findings
    except yaml.YAMLError as exc:
        # e.g. a tag such as '!!python/object' that the safe loader does not construct
        findings.append(_yaml_finding(exc, filename))
        return None, lines, findings
    except (ValueError, OverflowError) as exc:
        # e.g. an integer of thousands of digits (Python's int conversion limit)
        findings.append(Finding(filename, None, "", f"a value cannot be read: {exc}",
                                "write numbers of sensible size, and dates as YYYY-MM-DD"))
        return None, lines, findings


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _depth_finding(filename: str, line: int | None) -> Finding:
    return Finding(filename, line, "", f"sections and lists are nested more than {MAX_DEPTH} levels deep",
                   "a policy nests a few levels: check the indentation and the brackets")


def _too_deep(text: str) -> int | None:
    """The line where flow brackets (``[[[``, ``{{{``) nest deeper than MAX_DEPTH, checked
    before parsing (the YAML parser recurses once per level and would overflow)."""
    depth = 0
    line = 1
    quote = ""
    for ch in text:
        if ch == "\n":
            line += 1
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif ch in "]}" and depth:
            depth -= 1
    return None


class _TooManyValues(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _fingerprint(policy: Policy) -> str:
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validate_policy_text(text: str, filename: str = "<policy>", *, today: date | None = None) -> tuple[Policy | None, list[Finding]]:
    """Validate policy YAML; return the policy (or None) and every finding (errors and warnings)."""
    today = today or date.today()
    data, lines, findings = _compose(text, filename)
    if data is None and not findings:
        findings.append(Finding(filename, 1, "", "the policy file is empty", f"start from the example policy of the scrapy-gdpr documentation ({FIELD_HELP})"))
    if findings and data is None:
        return None, findings
    if not isinstance(data, dict):
        findings.append(Finding(filename, 1, "", "the policy must be a mapping of 'key: value' lines",
                                f"start from the example policy of the scrapy-gdpr documentation ({FIELD_HELP})"))
        return None, findings
    policy, schema_findings = _schema_findings(data, lines, filename)
    findings += schema_findings
    findings += _rule_findings(data, lines, filename, today)
    findings.sort(key=lambda f: (f.line or 0, f.severity))
    if any(f.severity == "error" for f in findings):
        return None, findings
    assert policy is not None
    policy._lines = lines
    policy._warnings = [f for f in findings if f.severity == "warning"]
    policy._fingerprint = _fingerprint(policy)
    return policy, findings


def read_policy_text(path: Path) -> str:
    """The text of a policy file; raise :class:`PolicyError` (a finding) when it is not
    a regular file, larger than :data:`MAX_POLICY_BYTES`, or not UTF-8 text.

    Opened without blocking and checked on the open file, so a FIFO, a device such
    as ``/dev/zero`` or a folder is refused without being read.
    """
    name = str(path)

    def fail(message: str, fix: str) -> PolicyError:
        return PolicyError([Finding(name, None, "", message, fix)])

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise fail(
            "the policy file does not exist",
            f"create it ({FIELD_HELP}), or point GDPR_POLICY (or the spider's gdpr_policy) at the right "
            "file; a relative path is relative to the project folder (where scrapy.cfg is)",
        ) from None
    except IsADirectoryError:
        raise fail("the policy path is a folder, not a file", "point GDPR_POLICY at the policy's YAML file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise fail(f"the policy file cannot be opened: {exc}", "check the path and its permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise fail("the policy path is not a regular file (a FIFO, device, socket or folder)",
                       "point GDPR_POLICY at the policy's YAML file")
        if info.st_size > MAX_POLICY_BYTES:
            raise fail(f"the policy file is {info.st_size:,} bytes, more than the {MAX_POLICY_BYTES:,} allowed",
                       "a policy needs a few kilobytes: check that this is the right file")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise fail(f"the policy file cannot be read: {exc}", "check the path and its permissions") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_POLICY_BYTES:
        raise fail(f"the policy file is more than {MAX_POLICY_BYTES:,} bytes",
                   "a policy needs a few kilobytes: check that this is the right file")
    try:
        # utf-8-sig: editors on Windows may save a byte-order mark
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError([Finding(name, line, "", f"the policy file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                                   "save the file as UTF-8")]) from None
    return text


def load_policy(path: str | Path, *, today: date | None = None) -> Policy:
    """Load and validate a policy file; raise :class:`PolicyError` listing every error."""
    path = Path(path)
    text = read_policy_text(path)
    policy, findings = validate_policy_text(text, str(path), today=today)
    if policy is None:
        raise PolicyError(findings)
    policy._path = path.resolve()
    return policy
