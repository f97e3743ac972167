"""Hostile policy files: every loader failure is a finding (file:line: key: problem
(fix: ...)), never a traceback, a hang or unbounded memory; every number bounded;
the Art. 30 records required under --strict; ``gdpr-lint --explain``."""

from __future__ import annotations

import os
import threading
from datetime import date
from typing import TYPE_CHECKING

import pytest

from scrapy_gdpr.policy import (
    MAX_DEPTH,
    MAX_POLICY_BYTES,
    PolicyError,
    load_policy,
    policy_json_schema,
    validate_policy_text,
)
from tests.utils import DATA, run_scrapy

if TYPE_CHECKING:
    from pathlib import Path

VALID = DATA / "policies" / "valid.yaml"
TODAY = date(2026, 11, 1)


def valid_text() -> str:
    return VALID.read_text(encoding="utf-8")


def only_error(text: str) -> str:
    policy, findings = validate_policy_text(text, "p.yaml", today=TODAY)
    assert policy is None
    errors = [f for f in findings if f.severity == "error"]
    assert errors
    return "\n".join(str(f) for f in errors)


def load_error(path: Path | str, timeout: float = 10) -> str:
    """Load in a thread so that a hang fails the test instead of blocking it."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            load_policy(path, today=TODAY)
        except PolicyError as exc:
            out["findings"] = exc.findings
        except BaseException as exc:  # noqa: BLE001 - handed to the test's own thread, which fails on it
            out["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"loading {path} did not finish in {timeout} s"
    assert "exc" not in out, f"{out.get('exc')!r} instead of a finding"
    return "\n".join(str(f) for f in out["findings"])  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400", "86401", "100000"])
def test_delays_are_finite_and_bounded(value):
    text = valid_text().replace("default_delay: 0", f"default_delay: {value}")
    message = only_error(text)
    assert "politeness.default_delay" in message and "(fix: " in message


def test_rate_limit_delay_bounded():
    text = valid_text().replace("    allow_private_network: true\n",
                                "    allow_private_network: true\n    rate_limit: {delay: .inf}\n", 1)
    assert "domains[0].rate_limit.delay" in only_error(text)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("images: P14D", "images: P999999999999Y", "retention.images"),
        ("images: P14D", "images: P101Y", "retention.images"),
    ],
)
def test_durations_bounded(old, new, key):
    text = valid_text()
    assert old in text
    message = only_error(text.replace(old, new))
    assert key in message


def test_huge_integer_is_a_finding():
    text = valid_text().replace("default_concurrency: 8", "default_concurrency: " + "9" * 5000)
    message = only_error(text)
    assert "cannot be read" in message or "politeness.default_concurrency" in message


def test_every_number_in_the_schema_has_an_upper_bound():
    schema = policy_json_schema()
    unbounded = []

    def walk(node, path):
        if isinstance(node, dict):
            bounded = {"maximum", "exclusiveMaximum", "const", "enum"} & set(node)
            if node.get("type") in ("number", "integer") and not bounded:
                unbounded.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert unbounded == []


# --------------------------------------------------------------------------- files


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    message = load_error(fifo)
    assert f"{fifo}: error: the policy path is not a regular file" in message


def test_dev_zero_is_refused_unread():
    message = load_error("/dev/zero")
    assert "not a regular file" in message


def test_folder_is_refused(tmp_path):
    assert "folder" in load_error(tmp_path)


def test_nul_in_path_is_a_finding():
    assert "cannot be opened" in load_error("policies/a\x00b.yaml")


def test_large_file_is_refused_quickly(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("w", encoding="utf-8") as fh:
        fh.write(valid_text())
        fh.write("data_categories:\n")
        line = "  - " + "x" * 60 + "\n"
        fh.write(line * (50 * 1024 * 1024 // len(line)))
    message = load_error(big)
    # refused from its size on the open file, before any byte is parsed
    assert f"{big}: error: the policy file is {big.stat().st_size:,} bytes, more than the {MAX_POLICY_BYTES:,} allowed" in message
    assert "alias" not in message


def test_a_long_list_under_the_size_limit_does_not_blame_aliases(tmp_path):
    text = valid_text() + "transfers:\n" + "  - 1\n" * 110_000
    path = tmp_path / "p.yaml"
    path.write_text(text[: MAX_POLICY_BYTES - 10], encoding="utf-8")
    message = load_error(path, timeout=60)
    assert "more than 100,000 values" in message and "alias" not in message


def test_alias_bomb_still_blames_aliases():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    message = only_error("\n".join(lines) + "\n")
    assert "'*alias' references" in message


@pytest.mark.parametrize("kind", ["flow-list", "flow-map", "block"])
def test_deep_nesting_is_a_finding(kind):
    n = 10_000
    if kind == "flow-list":
        text = "policy_id: " + "[" * n + "]" * n + "\n"
    elif kind == "flow-map":
        text = "policy_id: " + "{a: " * n + "1" + "}" * n + "\n"
    else:
        text = "policy_id:\n  " + "- " * n + "v\n"  # block sequences, one inside the other
    message = only_error(text)
    assert f"nested more than {MAX_DEPTH} levels deep" in message


def test_nul_byte_in_the_text_is_a_finding(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(valid_text().encode("utf-8").replace(b"policy_id:", b"policy_id:\x00", 1))
    message = load_error(path)
    assert "NUL byte" in message and "p.yaml:" in message


def test_not_utf8_is_a_finding_with_its_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"version: 1\npolicy_id: caf\xe9\n")
    assert "p.yaml:2: error: the policy file is not UTF-8 text" in load_error(path)


def test_lint_reports_hostile_files_as_findings(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.yaml"
    deep.write_text("policy_id: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    result = run_scrapy("gdpr-lint", str(fifo), str(deep), "/dev/zero", timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{fifo}: error: the policy path is not a regular file" in result.stdout
    assert f"{deep}:1: error: sections and lists are nested" in result.stdout


# --------------------------------------------------------------------------- Art. 30 records


@pytest.mark.parametrize(
    ("remove", "article"),
    [("data_subjects: [bystanders, site_authors]\n", "30(1)(c)"),
     ("data_categories: [user.content.self_image, user.name]\n", "30(1)(c)"),
     ("recipients: []\n", "30(1)(d)")],
)
def test_art30_records_fail_under_strict(tmp_path, remove, article):
    text = valid_text()
    assert remove in text
    path = tmp_path / "p.yaml"
    path.write_text(text.replace(remove, ""), encoding="utf-8")
    result = run_scrapy("gdpr-lint", str(path), "--today", "2026-11-01")
    assert result.returncode == 0, result.stdout
    assert f"(a required record, Art. {article})" in result.stdout
    strict = run_scrapy("gdpr-lint", "--strict", str(path), "--today", "2026-11-01")
    assert strict.returncode == 1
    assert "FAILED (--strict)" in strict.stdout


def test_empty_subjects_count_as_missing_but_empty_recipients_do_not():
    text = valid_text().replace("data_subjects: [bystanders, site_authors]", "data_subjects: []")
    _, findings = validate_policy_text(text, "p.yaml", today=TODAY)
    assert [f.path for f in findings if "Art. 30" in f.message] == ["data_subjects"]
    _, findings = validate_policy_text(valid_text(), "p.yaml", today=TODAY)
    assert not [f for f in findings if "Art. 30" in f.message]


def test_art30_gap_is_an_open_item_in_the_review_checklist():
    from scrapy_gdpr.policy import Policy  # noqa: F401 - the model the review is built from
    from scrapy_gdpr.review import build_documents

    text = valid_text().replace("recipients: []\n", "")
    policy, findings = validate_policy_text(text, "p.yaml", today=TODAY)
    assert policy is not None
    doc = build_documents(policy, findings, today=TODAY)
    assert any("Art. 30(1)(d)" in item["text"] for item in doc["checklist"])


# --------------------------------------------------------------------------- --explain


def test_explain_prints_a_fields_documentation():
    result = run_scrapy("gdpr-lint", "--explain", "domains[0].terms.verdict")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "domains[0].terms.verdict"
    assert "What the terms say about crawling" in result.stdout
    assert "one of: permits, forbids, conditional" in result.stdout
    result = run_scrapy("gdpr-lint", "--explain", "politeness.default_delay")
    assert "Limits: >= 0, <= 3600.0" in result.stdout


def test_explain_unknown_key_suggests():
    result = run_scrapy("gdpr-lint", "--explain", "faces.acton")
    assert result.returncode == 2
    assert "did you mean faces.action" in result.stderr


def test_every_field_is_documented():
    from scrapy_gdpr.explain import all_keys, explain

    undocumented = [k for k in all_keys() if len((explain(k) or "").splitlines()) < 2
                    or (explain(k) or "").splitlines()[1].startswith("  Value:")]
    assert undocumented == []
