"""scrapy gdpr-access: everything held about a URL, prefix, domain or text, as one zip."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from scrapy.commands import ScrapyCommand

from scrapy_gdpr.commands import _rights
from scrapy_gdpr.rights import audit_paths_for, export_access, find_holdings, new_request_id, write_receipts
from scrapy_gdpr.stores import close_stores


class Command(ScrapyCommand):
    requires_project = False
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "--url URL | --url-prefix URL | --domain HOST | --contains TEXT [--out FILE]"

    def short_desc(self) -> str:
        return "Export everything held that matches, as a zip to send to the person"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        _rights.add_common_options(parser)
        _rights.add_selector_options(parser)
        parser.add_argument("--out", metavar="FILE", help="the archive (default: <request id>.zip)")
        parser.add_argument("--search-audit-log", action="append", default=[], metavar="FILE",
                            help="audit logs to search (default: every log GDPR_AUDIT_LOG names)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        sels = _rights.selectors(opts)
        received = datetime.now(UTC)
        request_id = new_request_id("access", received)
        pol = _rights.policy(opts, self.settings, required=False)
        stores = _rights.item_stores(self.settings)
        ledger = _rights.ledger(opts, self.settings)
        audit = _rights.audit_log(opts, self.settings, "rights")
        try:
            paths = audit_paths_for(_rights.audit_template(self.settings), opts.search_audit_log)
            holdings = find_holdings(ledger, sels, paths, stores=stores)
            out = Path(opts.out or f"{request_id}.zip")
            contact = ""
            if pol is not None:
                contact = pol.dpo.email if pol.dpo and pol.dpo.email else (pol.controller.email or "")
            summary = export_access(holdings, out, request_id=request_id, received=received,
                                    controller=pol.controller.name if pol else "", contact=contact)
            summary["archive"] = str(out)
            summary["completed"] = datetime.now(UTC).isoformat()
            audit.write({"spider": opts.spider or "", "url": "", "decision": "access_request",
                         **{k: v for k, v in summary.items() if k != "feed_files"}})
            receipts = write_receipts(summary, Path(opts.receipt_dir))
        finally:
            audit.close()
            ledger.close()
            close_stores(stores)
        print(f"{request_id}: {summary['items']} item(s), {summary['files']} file(s), "
              f"{summary['audit_entries']} log entries -> {out}")
        print(f"receipt: {receipts['md']}")
        for problem in holdings.store_errors:
            print(f"incomplete (item store not searched): {problem}", file=sys.stderr)
            self.exitcode = 1
