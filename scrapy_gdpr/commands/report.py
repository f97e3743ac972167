"""``scrapy gdpr-report``: the review document and the public crawler information page."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from scrapy_gdpr.commands import _rights
from scrapy_gdpr.commands.lint import check_policy, parse_today
from scrapy_gdpr.documents.description import description_file
from scrapy_gdpr.documents.record import (
    processing_record,
    render_processing_record_html,
    render_processing_record_markdown,
)
from scrapy_gdpr.documents.review import build_documents, render_notice_html, render_review_html, render_review_markdown
from scrapy_gdpr.retention.ledger import parse_ts

if TYPE_CHECKING:
    import argparse

FORMATS = ("html", "md")


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options] POLICY"

    def short_desc(self) -> str:
        return "Write a GDPR policy's review document and crawler information page"

    def long_desc(self) -> str:
        return (
            "Validate POLICY, then write the review document for the privacy officer (HTML and Markdown), "
            "the public crawler information page (Art. 14 notice, HTML) with the machine-readable description of "
            "the crawler beside it (JSON), and their content as JSON, and print "
            "the paths. An invalid policy prints its findings and writes nothing. Exit status: 0 on success, "
            "1 when the policy is missing or invalid, 2 on a usage error."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--out", metavar="DIR", default=None, help="output folder (default: GDPR_REPORT_DIR, gdpr-reports)"
        )
        parser.add_argument(
            "--format", dest="format", default="html,md", metavar="FORMATS",
            help="formats of the review document, comma-separated: html, md (default: html,md)",
        )
        parser.add_argument(
            "--today", metavar="YYYY-MM-DD", default=None, help="review dates as if today were this day"
        )
        record = parser.add_argument_group("record of processing (from the ledger and the audit log)")
        record.add_argument(
            "--processing-record", action="store_true",
            help="also write the record of processing over a period (implied by --since/--until)",
        )
        record.add_argument("--since", metavar="ISO", default=None, help="start of the period (default: the start)")
        record.add_argument("--until", metavar="ISO", default=None, help="end of the period (default: now)")
        record.add_argument("--ledger", metavar="URL", default=None, help="ledger URL (default: GDPR_LEDGER)")
        record.add_argument(
            "--audit-log", metavar="FILE", action="append", default=None,
            help="audit log(s) to read (default: GDPR_AUDIT_LOG for the spider named like the policy file)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one policy file")
        formats = [f.strip().lower() for f in opts.format.split(",") if f.strip()]
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise UsageError(f"--format takes a comma-separated list of {', '.join(FORMATS)}", print_help=False)
        today = parse_today(opts.today)
        policy, findings = check_policy(Path(args[0]), today)
        if policy is None:
            for finding in findings:
                print(finding, file=sys.stderr)
            errors = sum(f.severity == "error" for f in findings)
            print(f"{args[0]}: invalid policy ({errors} error(s)); no report written", file=sys.stderr)
            self.exitcode = 1
            return
        assert self.settings is not None
        out = Path(opts.out or _rights.config(self.settings).report_dir or "gdpr-reports")
        out.mkdir(parents=True, exist_ok=True)
        doc = build_documents(policy, findings, today=today, settings=self.settings)
        stem = policy.policy_id
        written: list[Path] = []

        def write(name: str, text: str) -> None:
            path = out / name
            path.write_text(text, encoding="utf-8")
            written.append(path)

        if "html" in formats:
            write(f"{stem}-review.html", render_review_html(doc))
        if "md" in formats:
            write(f"{stem}-review.md", render_review_markdown(doc))
        write(f"{stem}-crawler-info.html", render_notice_html(doc))
        # the machine-readable description, linked from the page: publish both together
        write(description_file(stem), json.dumps(doc["crawler_description"], indent=2, ensure_ascii=False) + "\n")
        write(f"{stem}-review.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        if opts.processing_record or opts.since or opts.until:
            record = self._processing_record(Path(args[0]), opts)
            write(f"{stem}-processing-record.html", render_processing_record_html(record))
            write(f"{stem}-processing-record.md", render_processing_record_markdown(record))
            write(f"{stem}-processing-record.json", json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
        for path in written:
            print(path)

    def _processing_record(self, policy_path: Path, opts: argparse.Namespace) -> dict[str, Any]:
        assert self.settings is not None
        try:
            since = parse_ts(opts.since) if opts.since else None
            until = parse_ts(opts.until) if opts.until else None
        except ValueError as exc:
            raise UsageError(f"--since/--until: {exc}", print_help=False) from None
        ledger = _rights.ledger_url(opts, self.settings)
        audit = opts.audit_log
        if not audit:
            # GDPR_AUDIT_LOG = "": the crawls keep no audit log, so there is none to read
            template = _rights.config(self.settings).audit_log or ""
            audit = [template % {"name": policy_path.stem}] if "%(" in template else [template] if template else []
        return processing_record(ledger, [p for p in audit if Path(p).exists()], since, until)
