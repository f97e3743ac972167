from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from scrapy_gdpr.config import DEFAULTS
from scrapy_gdpr.policy import (
    SCHEMA_PATH,
    Finding,
    Policy,
    PolicyError,
    load_policy,
    policy_json_schema,
    validate_policy_text,
)
from scrapy_gdpr.policy.loader import _Loader
from tests.utils import DATA, ROOT, run_scrapy

POLICIES = DATA / "policies"
VALID = POLICIES / "valid.yaml"
TODAY = date(2026, 11, 1)


def findings_of(name: str, today: date = TODAY) -> list[Finding]:
    with pytest.raises(PolicyError) as info:
        load_policy(POLICIES / name, today=today)
    return info.value.findings


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def only(findings: list[Finding], path: str) -> Finding:
    found = [f for f in findings if f.path == path]
    assert len(found) == 1, (path, [str(f) for f in findings])
    return found[0]


def validate(text: str, today: date = TODAY) -> tuple[Policy | None, list[Finding]]:
    return validate_policy_text(text, "p.yaml", today=today)


# --------------------------------------------------------------------------- valid files


def test_valid_policy_loads():
    policy = load_policy(VALID, today=TODAY)
    assert policy.policy_id == "test-gallery"
    assert policy.path == VALID.resolve()
    assert policy.warnings == []
    assert policy.fingerprint.startswith("sha256:") and len(policy.fingerprint) == 71
    assert policy.purposes[0].reviewed_on == date(2026, 10, 1)
    assert policy.faces.action == "blur"
    assert policy.retention.images == "P14D"
    assert policy.domains[0].deny_paths == ["/private/"]
    assert policy.line_of("domains", 0, "terms") == 30
    assert policy.clause("faces", "action") == "faces.action (line 40)"


def test_norway_stays_a_string():
    # YAML 1.1 reads an unquoted `no` as False; the policy loader reads YAML 1.2 scalars
    text = VALID.read_text().replace('exclude_tlds: [cn, "no"]', "exclude_tlds: [cn, no, NO]")
    text = text.replace("  name: Example Research Ltd", "  name: yes")
    policy, findings = validate(text.replace("NO]", "se]"))
    assert policy is not None, [str(f) for f in findings]
    assert policy.jurisdictions.exclude_tlds == ["cn", "no", "se"]
    assert policy.controller.name == "yes"


def test_dates_stay_strings_in_yaml():
    data = yaml.load("d: 2026-10-01\nb: no\nt: true\n", Loader=_Loader)
    assert data == {"d": "2026-10-01", "b": "no", "t": True}


def test_warnings_are_reported_but_the_policy_loads():
    policy = load_policy(POLICIES / "warnings.yaml", today=TODAY)
    by_path = {f.path: f for f in policy.warnings}
    assert all(f.severity == "warning" for f in policy.warnings)
    due = by_path["purposes[0].review_due"]
    assert due.line == 24
    assert "due on 2026-11-20" in due.message
    lia = by_path["purposes[0].lawful_basis"]
    assert lia.line == 21 and "LIA" in lia.message and "basis_reference" in lia.fix
    dpia = by_path["purposes[1]"]
    assert dpia.line == 26 and "DPIA" in dpia.message and "dpia_reference" in dpia.fix
    fingerprint = by_path["domains[0].terms"]
    assert fingerprint.line == 52 and "fingerprint" in fingerprint.message and "gdpr-terms" in fingerprint.fix
    assert by_path["domains[1]"].line == 62 and "no terms review" in by_path["domains[1]"].message
    assert str(due) == (
        f"{POLICIES / 'warnings.yaml'}:24: warning: purposes[0].review_due: the lawful-basis review is due on "
        "2026-11-20 (fix: schedule the review before that date)"
    )


def test_review_warning_window_is_30_days():
    text = VALID.read_text().replace("review_due: 2099-10-01", "review_due: 2026-12-01")
    assert validate(text, today=date(2026, 10, 31))[1] == []
    policy, findings = validate(text, today=date(2026, 11, 1))
    assert policy is not None
    assert [(f.severity, f.path) for f in findings] == [("warning", "purposes[0].review_due")]
    policy, findings = validate(text, today=date(2026, 12, 1))
    assert policy is not None and findings[0].severity == "warning"  # due today: not yet overdue
    policy, findings = validate(text, today=date(2026, 12, 2))
    assert policy is None and findings[0].severity == "error" and "overdue" in findings[0].message


def test_no_lia_warning_with_a_reference():
    text = VALID.read_text()
    assert "basis_reference: LIA-2026-004" in text
    _, findings = validate(text.replace("    basis_reference: LIA-2026-004\n", ""))
    assert [(f.path, f.severity) for f in findings] == [("purposes[0].lawful_basis", "warning")]


# --------------------------------------------------------------------------- invalid files


def test_unknown_keys_suggest_the_right_key():
    found = findings_of("invalid-unknown-key.yaml")
    f = only(found, "faces.acton")
    assert (f.line, f.severity, f.message) == (40, "error", "unknown key 'acton'")
    assert f.fix.startswith("did you mean 'action'? allowed keys here: action, allow_unchecked_types,")
    f = only(found, "domains[0].deny_path")
    assert f.line == 36 and f.fix.startswith("did you mean 'deny_paths'?")
    assert len(found) == 2


def test_unknown_key_without_close_match_lists_allowed_keys():
    _, findings = validate(VALID.read_text() + "zzz: 1\n")
    f = only(findings, "zzz")
    assert f.fix.startswith("remove it; allowed keys here: controller, crawler,")


def test_wrong_types():
    found = findings_of("invalid-types.yaml")
    f = only(found, "controller.name")
    assert f.line == 6 and "valid string" in f.message and "(got 123)" in f.message and "quote it" in f.fix
    f = only(found, "data_subjects")
    assert f.line == 25 and "valid list" in f.message and "'- '" in f.fix
    f = only(found, "domains[0].allow_private_network")
    assert f.line == 29 and "'maybe'" in f.message and f.fix == "write true or false"
    f = only(found, "politeness.default_delay")
    assert f.line == 46 and "'fast'" in f.message and f.fix == "write a number"
    assert len(found) == 4


def test_invalid_dates():
    found = findings_of("invalid-dates.yaml")
    f = only(found, "purposes[0].reviewed_on")
    assert f.line == 22 and f.message.startswith("'2026-13-01' is not a valid date (month")
    f = only(found, "purposes[0].review_due")
    assert f.line == 23 and f.message == "'1 October 2099' is not a date written as YYYY-MM-DD"
    assert f.fix.startswith("write the date as YYYY-MM-DD")
    f = only(found, "domains[0].terms.reviewed_on")
    assert f.line == 33 and "'2026-02-30' is not a valid date" in f.message
    assert len(errors(found)) == 3


@pytest.mark.parametrize("value", ["20991001", "2099-10-01T10:00:00", "2099/10/01", "1e9"])
def test_dates_must_be_calendar_days(value):
    _, findings = validate(VALID.read_text().replace("review_due: 2099-10-01", f"review_due: {value}"))
    f = only(findings, "purposes[0].review_due")
    assert f.line == 23 and "is not a date written as YYYY-MM-DD" in f.message


def test_invalid_durations():
    found = findings_of("invalid-durations.yaml")
    f = only(found, "retention.images")
    assert f.line == 46 and f.message.startswith("'14 days' is not an ISO 8601 duration")
    assert "P30D" in f.fix
    f = only(found, "retention.items.default")
    assert f.line == 45 and "got 30" in f.message
    f = only(found, "robots.cache_ttl")
    assert f.line == 40 and f.message.startswith("'PT' is not an ISO 8601 duration")
    assert len(found) == 3


def test_faces_kept_without_art9_condition():
    found = findings_of("invalid-faces-keep.yaml")
    f = only(errors(found), "faces.action")
    assert f.line == 40
    assert f.message == "faces are set to be kept, but no Art. 9 condition for biometric data is documented"
    assert "special_categories.biometric" in f.fix


def test_faces_kept_with_art9_condition_is_valid():
    text = VALID.read_text().replace("action: blur", "action: keep") + (
        "special_categories:\n  biometric:\n    condition: explicit_consent\n    reference: DPIA-7\n"
        "    reviewed_by: Dana Protection\n    reviewed_on: 2026-10-01\n"
    )
    policy, findings = validate(text)
    assert policy is not None and policy.faces_may_be_kept()
    # biometric data is processed: a DPIA reference is expected
    assert [(f.path, f.severity) for f in findings] == [("purposes[0]", "warning")]
    assert "DPIA" in findings[0].message
    policy, findings = validate(text.replace("    signal_purposes", "    dpia_reference: DPIA-7\n    signal_purposes"))
    assert policy is not None and findings == []


def test_overdue_review():
    found = findings_of("invalid-overdue.yaml")
    f = only(found, "purposes[0].review_due")
    assert f.line == 23 and f.severity == "error"
    assert f.message == "the lawful-basis review was due on 2026-10-15 and is overdue"


def test_domain_listed_twice():
    found = findings_of("invalid-duplicate-domain.yaml")
    f = only(found, "domains[1].domain")
    assert f.line == 37
    assert f.message == "domain '127.0.0.1' is listed twice (first as domains[0], line 28)"


def test_duplicate_yaml_key():
    found = findings_of("invalid-duplicate-key.yaml")
    f = only(found, "faces.action")
    assert f.line == 42
    assert f.message == "key 'action' appears twice in the same section (first on line 40)"


def test_yaml_syntax_error():
    found = findings_of("invalid-syntax.yaml")
    assert len(found) == 1
    f = found[0]
    assert f.line == 26 and f.path == ""
    assert f.message.startswith("the file is not valid YAML: expected ',' or ']'")
    assert "line 25" in f.message
    assert str(f).startswith(f"{POLICIES / 'invalid-syntax.yaml'}:26: error: the file is not valid YAML")


def test_empty_file():
    found = findings_of("invalid-empty.yaml")
    assert [(f.line, f.message) for f in found] == [(1, "the policy file is empty")]
    assert validate("")[1][0].message == "the policy file is empty"


def test_yaml_merge_keys_are_read():
    text = VALID.read_text().replace(
        "dpo:\n  name: Dana Protection\n  email: dpo@example.org",
        "dpo: &dpo\n  name: Dana Protection\n  email: dpo@example.org\nrepresentative:\n  <<: *dpo\n  name: EU Rep",
    )
    policy, findings = validate(text)
    assert policy is not None, [str(f) for f in findings]
    assert policy.representative is not None
    assert (policy.representative.name, policy.representative.email) == ("EU Rep", "dpo@example.org")
    assert policy.line_of("representative", "name") == 14


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['true']", "!custom x"])
def test_unknown_yaml_tags_are_findings_not_crashes(tag):
    policy, findings = validate(VALID.read_text().replace("title: Test gallery crawl", f"title: {tag}"))
    assert policy is None
    [f] = findings
    assert f.line == 4 and f.message.startswith("the file is not valid YAML: could not determine a constructor")


def test_not_a_mapping():
    _, findings = validate("- a\n- b\n")
    assert findings[0].message == "the policy must be a mapping of 'key: value' lines"


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    [f] = info.value.findings
    assert f.file == str(missing) and f.line is None and f.message == "the policy file does not exist"
    assert "GDPR_POLICY" in f.fix
    assert f"{missing}: error: the policy file does not exist" in str(info.value)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.read_bytes())
    assert load_policy(path, today=TODAY).policy_id == "test-gallery"


def test_several_errors_reported_at_once():
    found = findings_of("invalid-many.yaml")
    assert [(f.line, f.path) for f in errors(found)] == [
        (3, "policy_id"),
        (19, "purposes[0].lawful_basis"),
        (40, "faces.action"),
        (44, "retention.images"),
        (47, "politeness.default_concurency"),
    ]
    assert "is not in the allowed form" in found[0].message and "lower-case letters" in found[0].fix
    lawful = only(found, "purposes[0].lawful_basis")
    assert "(got 'interests')" in lawful.message and "legitimate_interests" in lawful.fix
    with pytest.raises(PolicyError) as info:
        load_policy(POLICIES / "invalid-many.yaml", today=TODAY)
    text = str(info.value)
    assert text.splitlines()[0] == f"Invalid GDPR policy {POLICIES / 'invalid-many.yaml'}: 5 error(s)"
    assert "invalid-many.yaml:47: error: politeness.default_concurency: unknown key" in text


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    [
        ("- domain: 127.0.0.1", "- domain: http://127.0.0.1/", "domains[0].domain", "is a URL, not a host name"),
        ("url: http://127.0.0.1/terms.html", "url: terms.html", "domains[0].terms.url", "not an absolute http(s) URL"),
        ('"sha256:0000000000000000000000000000000000000000000000000000000000000000"', "abc",
         "domains[0].terms.fingerprint", "sha256:<64 hex digits>"),
        ("  product_token: GdprTestBot", "  product_token: Gdpr Test Bot", "crawler.product_token", "allowed form"),
        ('  user_agent: "GdprTestBot/1.0 (+http://127.0.0.1/crawler-info.html)"', "  user_agent: GdprTestBot/1.0",
         "crawler.user_agent", "no contact URL"),
        ("verdict: permits", "verdict: allowed", "domains[0].terms.verdict", "'permits'"),
        ("  default_concurrency: 8", "  default_concurrency: 0", "politeness.default_concurrency", "greater than or equal"),
        ("    default: P30D", "    ArticleItem: P30D", "retention.items", "no 'default' retention period"),
    ],
)
def test_other_invalid_values(old, new, path, words):
    text = VALID.read_text()
    assert old in text
    policy, findings = validate(text.replace(old, new))
    assert policy is None
    [f] = [f for f in errors(findings) if f.path == path and words in f.message]
    assert f.line and f.fix


def test_required_keys_are_reported_on_their_section():
    _, findings = validate(VALID.read_text().replace("  name: Dana Protection\n  email: dpo@", "  email: dpo@"))
    f = only(findings, "dpo.name")
    assert (f.line, f.message, f.fix) == (9, "required key 'name' is missing", "add this key")


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_across_layout():
    original = load_policy(VALID, today=TODAY).fingerprint
    data = yaml.load(VALID.read_text(), Loader=_Loader)
    reordered = dict(reversed(list(data.items())))
    reordered["faces"] = {"action": "blur"}
    text = "# another comment\n\n" + yaml.safe_dump(reordered, indent=4, default_flow_style=False, sort_keys=False)
    text = text.replace("policy_id: test-gallery", "policy_id:    test-gallery   # trailing comment")
    policy, findings = validate(text)
    assert policy is not None, [str(f) for f in findings]
    assert policy.fingerprint == original
    # writing a default explicitly does not change what the policy means
    policy, _ = validate(VALID.read_text().replace("  action: blur", "  action: blur\n  margin: 0.25"))
    assert policy is not None and policy.fingerprint == original


@pytest.mark.parametrize(
    ("old", "new"),
    [("action: blur", "action: pixelate"), ("images: P14D", "images: P15D"), ("deny_paths: [/private/]", "deny_paths: []")],
)
def test_fingerprint_changes_with_a_value(old, new):
    original = load_policy(VALID, today=TODAY).fingerprint
    policy, _ = validate(VALID.read_text().replace(old, new))
    assert policy is not None and policy.fingerprint != original


# --------------------------------------------------------------------------- JSON Schema


def test_schema_file_is_up_to_date():
    on_disk = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert on_disk == policy_json_schema(), (
        "scrapy_gdpr/policy.schema.json is out of date; regenerate it from policy_json_schema()"
    )


@pytest.mark.parametrize("name", ["valid.yaml", "warnings.yaml"])
def test_valid_examples_validate_against_the_schema(name):
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.load((POLICIES / name).read_text(), Loader=_Loader)
    jsonschema.Draft202012Validator(schema).validate(data)


def test_schema_rejects_unknown_keys_and_bad_durations():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("invalid-unknown-key.yaml", "invalid-durations.yaml"):
        data = yaml.load((POLICIES / name).read_text(), Loader=_Loader)
        assert list(validator.iter_errors(data)), name


# --------------------------------------------------------------------------- the docs keep up


def model_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field of ``model``, recursively, as ``domains[].terms.url``."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        nested, is_list = _nested_model(info.annotation)
        if nested is not None:
            out += model_paths(nested, f"{path}[]." if is_list else f"{path}.")
    return out


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = getattr(annotation, "__origin__", None)
    for arg in getattr(annotation, "__args__", ()):
        found, is_list = _nested_model(arg)
        if found is not None:
            return found, is_list or origin is list
    return None, False


def test_model_paths_helper():
    paths = model_paths(Policy)
    assert "domains[].terms.fingerprint" in paths
    assert "special_categories.biometric.condition" in paths
    assert "dpo.email" in paths and "retention.items" in paths


def test_every_policy_field_is_documented():
    text = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    missing = [p for p in model_paths(Policy) if f"`{p}`" not in text]
    assert not missing, f"docs/policy.md does not document: {', '.join(missing)}"


def test_example_in_the_docs_is_valid_and_clean():
    text = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert example is not None
    policy, findings = validate_policy_text(example.group(1), "docs/policy.md", today=TODAY)
    assert policy is not None and findings == [], [str(f) for f in findings]
    assert policy.domains[0].terms is not None and policy.domains[0].terms.verdict == "conditional"


def test_every_reason_code_is_documented():
    from scrapy_gdpr.audit import Reason

    text = (ROOT / "docs" / "stats.md").read_text(encoding="utf-8")
    missing = [r.value for r in Reason if f"`gdpr/blocked/{r.value}`" not in text]
    assert not missing, f"docs/stats.md does not document: {', '.join(missing)}"


def test_every_setting_is_documented():
    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [name for name in DEFAULTS if not re.search(rf"^#+ *`?{name}`?\s*$", text, re.MULTILINE)]
    assert not missing, f"docs/settings.md has no section for: {', '.join(missing)}"


# --------------------------------------------------------------------------- the crawl refuses to start

SPIDER = """
import scrapy

class PageSpider(scrapy.Spider):
    name = "pages"
    start_urls = ["http://127.0.0.1:9/"]
    custom_settings = {{
        "ADDONS": {{"scrapy_gdpr.Addon": 0}},
        "GDPR_POLICY": {policy!r},
        "GDPR_AUDIT_LOG": {audit!r},
        "GDPR_REPORT_DIR": {reports!r},
        "GDPR_LEDGER": {ledger!r},
    }}

    def parse(self, response):
        yield {{"url": response.url}}
"""


def _spider_file(tmp_path: Path, policy: Path) -> Path:
    path = tmp_path / "spider.py"
    path.write_text(
        SPIDER.format(policy=str(policy), audit=str(tmp_path / "audit.jsonl"), reports=str(tmp_path / "reports"),
                      ledger=f"sqlite:///{tmp_path / 'ledger.sqlite3'}"),
        encoding="utf-8",
    )
    return path


def test_runspider_refuses_an_invalid_policy(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((POLICIES / "invalid-many.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    result = run_scrapy("runspider", str(_spider_file(tmp_path, bad)), cwd=tmp_path)
    assert result.returncode != 0
    assert f"{bad}:40: error: faces.action: faces are set to be kept" in result.stderr
    assert f"{bad}:3: error: policy_id:" in result.stderr
    assert "Spider opened" not in result.stderr
    assert not (tmp_path / "reports").exists()


def test_runspider_refuses_a_missing_policy(tmp_path):
    missing = tmp_path / "policies" / "pages.yaml"
    result = run_scrapy("runspider", str(_spider_file(tmp_path, missing)), cwd=tmp_path)
    assert result.returncode != 0
    assert f"{missing}: error: the policy file does not exist" in result.stderr


def test_crawl_refuses_an_invalid_policy_in_a_project(tmp_path):
    from tests.test_command_lint import make_project

    project = make_project(tmp_path, alpha=VALID, beta=POLICIES / "invalid-faces-keep.yaml")
    result = run_scrapy("crawl", "beta", cwd=project)
    assert result.returncode != 0, result.stderr
    assert f"{Path('policies') / 'beta-policy.yaml'}:40: error: faces.action" in result.stderr


def test_alias_bomb_is_refused_quickly():
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=False):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    policy, findings = validate_policy_text("\n".join(levels) + "\n", "bomb.yaml")
    assert policy is None
    assert [f.message for f in findings if "expands to more than" in f.message]
    assert findings[0].file == "bomb.yaml" and findings[0].line is not None
