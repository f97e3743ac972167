"""The policy rules a JSON Schema cannot express (cross-field rules, dates, Art. 30 records).

They work on the raw data, so they run even when the schema fails.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any, Literal

from scrapy_gdpr.policy.findings import Finding, _format_path, _line_for
from scrapy_gdpr.policy.model import REVIEW_WARNING_DAYS, keep_refused


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


#: Records of processing a policy must keep: key, article, what, how to fix.
ART30_RECORDS = (
    ("data_subjects", "30(1)(c)", "categories of data subjects",
     "list whose data the crawl processes under data_subjects, e.g. [site_authors, bystanders]"),
    ("data_categories", "30(1)(c)", "categories of personal data",
     "list the kinds of personal data under data_categories, e.g. [user.name, user.content.self_image]"),
    ("recipients", "30(1)(d)", "categories of recipients",
     "list who receives the data under recipients (name, role), or write 'recipients: []' if no one does"),
)


def _rule_findings(data: Any, lines: dict[tuple[Any, ...], int], filename: str, today: date) -> list[Finding]:
    """Rules the schema cannot express. Works on raw data so it runs even when the schema fails."""
    if not isinstance(data, dict):
        return []
    out: list[Finding] = []

    def add(path: tuple[Any, ...], message: str, fix: str, severity: Literal["error", "warning"] = "error") -> None:
        out.append(Finding(filename, _line_for(lines, path), _format_path(path), message, fix, severity))

    faces = _mapping(data.get("faces"))
    special = _mapping(data.get("special_categories"))
    has_art9 = bool(special.get("biometric"))
    if keep_refused(faces.get("action"), special.get("biometric")):
        add(
            ("faces", "action"),
            "faces are set to be kept, but no Art. 9 condition for biometric data is documented",
            "set faces.action to blur, pixelate, fill, drop_image or drop_item, or document the "
            "condition under special_categories.biometric (condition, reference, reviewed_by, reviewed_on)",
        )

    purposes = _sequence(data.get("purposes"))
    seen_ids: dict[str, int] = {}
    for i, purpose in enumerate(purposes):
        if not isinstance(purpose, dict):
            continue
        pid = purpose.get("id")
        if isinstance(pid, str):
            if pid in seen_ids:
                add(("purposes", i, "id"), f"purpose {pid!r} is listed twice (first as purposes[{seen_ids[pid]}])",
                    "give each purpose its own id, or merge the two entries")
            seen_ids.setdefault(pid, i)
        due = _as_date(purpose.get("review_due"))
        reviewed = _as_date(purpose.get("reviewed_on"))
        if due is not None and due < today:
            add(
                ("purposes", i, "review_due"),
                f"the lawful-basis review was due on {due.isoformat()} and is overdue",
                "review the lawful basis again, then update reviewed_on and review_due",
            )
        elif due is not None and due <= today + timedelta(days=REVIEW_WARNING_DAYS):
            add(("purposes", i, "review_due"), f"the lawful-basis review is due on {due.isoformat()}",
                "schedule the review before that date", "warning")
        if reviewed is not None and due is not None and reviewed > due:
            add(("purposes", i, "review_due"), "review_due is before reviewed_on", "set review_due after reviewed_on")
        if reviewed is not None and reviewed > today:
            add(("purposes", i, "reviewed_on"), f"reviewed_on {reviewed.isoformat()} is in the future",
                "write the date the review actually took place")
        basis = purpose.get("lawful_basis")
        if basis == "legitimate_interests" and not purpose.get("basis_reference"):
            add(("purposes", i, "lawful_basis"), "legitimate interests are relied on without an LIA reference",
                "record the legitimate interests assessment id in basis_reference", "warning")
        if not purpose.get("dpia_reference") and (faces.get("action") == "keep" or has_art9):
            add(("purposes", i), "biometric data may be processed but no DPIA reference is recorded",
                "record the DPIA id in dpia_reference", "warning")

    domains = _sequence(data.get("domains"))
    seen_domains: dict[str, int] = {}
    for i, rule in enumerate(domains):
        if not isinstance(rule, dict) or not isinstance(rule.get("domain"), str):
            continue
        name = rule["domain"].strip().lower().rstrip(".")
        if name in seen_domains:
            first = seen_domains[name]
            add(
                ("domains", i, "domain"),
                f"domain {name!r} is listed twice (first as domains[{first}], line {_line_for(lines, ('domains', first))})",
                "merge the two entries into one",
            )
        else:
            seen_domains[name] = i
        terms = rule.get("terms")
        if terms is None:
            add(("domains", i), f"domain {name!r} has no terms review, so it will not be crawled",
                "review the site's terms and record them under terms", "warning")
        elif isinstance(terms, dict):
            if terms.get("verdict") in ("permits", "conditional") and not terms.get("fingerprint"):
                add(("domains", i, "terms"), "no fingerprint of the reviewed terms text is recorded, so drift "
                    "cannot be detected and the domain will be refused",
                    "run 'scrapy gdpr-terms URL' and record the fingerprint it prints", "warning")
            if terms.get("verdict") == "none_published" and terms.get("fingerprint"):
                add(("domains", i, "terms", "fingerprint"), "a fingerprint is recorded, but the verdict says the "
                    "site publishes no terms", "remove the fingerprint, or record the reviewer's verdict on the terms")
            if terms.get("candidates") and terms.get("verdict") != "none_published":
                add(("domains", i, "terms", "candidates"), "candidates are watched only with verdict none_published",
                    "remove them, or set the verdict to none_published if the site publishes no terms", "warning")
            if terms.get("verdict") == "conditional" and not terms.get("conditions"):
                add(("domains", i, "terms", "conditions"), "a conditional verdict lists no conditions",
                    "list the conditions the reviewer attached")

    crawler = _mapping(data.get("crawler"))
    ua = crawler.get("user_agent")
    if isinstance(ua, str) and not re.search(r"https?://", ua):
        add(("crawler", "user_agent"), "the User-Agent carries no contact URL",
            "append the crawler information page, e.g. 'ExampleBot/1.0 (+https://example.org/crawler)'")
    token = crawler.get("product_token")
    if isinstance(ua, str) and isinstance(token, str) and token.lower() not in ua.lower():
        add(("crawler", "product_token"), f"the product token {token!r} does not appear in the User-Agent",
            "make the User-Agent start with the product token, e.g. 'ExampleBot/1.0 (+URL)'")
    purposes = _sequence(data.get("purposes"))
    for i, purpose in enumerate(purposes):
        own = purpose.get("product_token") if isinstance(purpose, dict) else None
        if isinstance(own, str) and isinstance(token, str) and own.lower() == token.lower():
            add(("purposes", i, "product_token"), f"{own!r} is the crawler's own product token, so it adds nothing",
                "name a token of its own for this purpose (e.g. 'ExampleBot-AI'), or remove the key", "warning")

    # Art. 30(1)(c) and (d): records a controller must keep. Warnings (errors under
    # 'gdpr-lint --strict'); an explicit 'recipients: []' records that there are none.
    for key, article, what, fix in ART30_RECORDS:
        value = data.get(key)
        if value is None or (key != "recipients" and value == []):
            add((key,) if key in data else (), f"no {what} recorded (a required record, Art. {article})", fix,
                "warning")

    held = _sequence(_mapping(data.get("opt_out")).get("rsl_licences"))
    for i, licence in enumerate(held):
        if not isinstance(licence, dict):
            continue
        obtained, expires = _as_date(licence.get("obtained_on")), _as_date(licence.get("expires_on"))
        if obtained is not None and expires is not None and expires < obtained:
            add(("opt_out", "rsl_licences", i, "expires_on"), "expires_on is before obtained_on",
                "write the licence's last valid day in expires_on")
        elif expires is not None and expires < today:
            add(("opt_out", "rsl_licences", i, "expires_on"),
                f"the licence expired on {expires.isoformat()}: the usage it granted is refused again",
                "renew the licence and update expires_on, or remove the entry", "warning")
        if obtained is not None and obtained > today:
            add(("opt_out", "rsl_licences", i, "obtained_on"),
                f"the licence is valid only from {obtained.isoformat()}: until then it is not used",
                "check the date", "warning")

    retention = _mapping(data.get("retention"))
    items = retention.get("items")
    if isinstance(items, dict) and "default" not in items:
        add(("retention", "items"), "no 'default' retention period for item types not listed",
            "add 'default: P30D' (or another period) under retention.items")
    return out
