"""scrapy gdpr-access: everything held about a URL, prefix, domain or text, as one zip."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.utils.project import data_path

from scrapy_gdpr.commands import _rights
from scrapy_gdpr.retention.rights import (
    audit_paths_for,
    export_access,
    find_holdings,
    ledger_problems,
    needs_confirmation,
    new_request_id,
    write_receipts,
)
from scrapy_gdpr.retention.stores import close_stores

if TYPE_CHECKING:
    import argparse

#: Where archives go without ``--out``: a folder in Scrapy's project data folder
#: (``<project>/.scrapy/gdpr-access/``), which holds a ``.gitignore`` of its own.
ARCHIVE_FOLDER = "gdpr-access"


def archive_folder() -> Path:
    folder = Path(data_path(ARCHIVE_FOLDER, createdir=True))
    folder.chmod(0o700)  # personal data: the owner only
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# access archives hold personal data: never commit them\n*\n", encoding="utf-8")
    return folder


class Command(ScrapyCommand):
    requires_project = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "--url URL | --url-prefix URL | --domain HOST | --contains TEXT [--out FILE]"

    def short_desc(self) -> str:
        return "Export everything held that matches, as a zip to send to the person"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        _rights.add_common_options(parser)
        _rights.add_selector_options(parser)
        parser.add_argument("--out", metavar="FILE",
                            help="the archive, a new file (default: .scrapy/gdpr-access/<request id>.zip in the "
                                 "project); an existing file is never overwritten")
        parser.add_argument("--search-audit-log", action="append", default=[], metavar="FILE",
                            help="audit logs to search (default: every log GDPR_AUDIT_LOG names)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        _rights.report_errors(self, lambda: self._run(opts))

    def _run(self, opts: argparse.Namespace) -> None:
        assert self.settings is not None
        sels = _rights.selectors(opts)
        received = datetime.now(UTC)
        request_id = new_request_id("access", received)
        out = Path(opts.out) if opts.out else None
        if out is not None and (out.exists() or out.is_symlink()):
            raise _rights.CommandError(f"{out} already exists: an access archive is always a new file. "
                                       "Fix: give another --out, or leave it out")
        pol = _rights.policy(opts, self.settings, required=False)
        stores = _rights.item_stores(self.settings)
        ledger, state = _rights.ledger_or_empty(opts, self.settings, readonly=True)
        audit = _rights.audit_log(opts, self.settings, "rights")
        try:
            with _rights.ledger_errors(ledger):
                paths = audit_paths_for(_rights.audit_template(self.settings), opts.search_audit_log)
                holdings = find_holdings(ledger, sels, paths, feeds=_rights.feed_paths(opts, self.settings),
                                         stores=stores)
            reason = needs_confirmation(holdings)
            if reason and not opts.yes:
                raise _rights.CommandError(f"nothing was exported: {reason}", code=2)
            if out is None:
                out = archive_folder() / f"{request_id}.zip"
            contact = ""
            if pol is not None:
                contact = pol.dpo.email if pol.dpo and pol.dpo.email else (pol.controller.email or "")
            try:
                summary = export_access(holdings, out, request_id=request_id, received=received,
                                        controller=pol.controller.name if pol else "", contact=contact)
            except FileExistsError:
                raise _rights.CommandError(f"{out} already exists: an access archive is always a new file. "
                                           "Fix: give another --out") from None
            problems = ledger_problems(state, holdings)
            problems += [f"{u['location']} could not be read: {u['error']}" for u in holdings.unreadable]
            problems += [f"item store not searched: {problem}" for problem in holdings.store_errors]
            summary["archive"] = str(out)
            summary["searched"] = {"ledger": ledger.display + {"missing": " (did not exist)",
                                                               "empty": " (empty)"}.get(state, ""),
                                   "feed_files": holdings.searched_feeds, "stores": holdings.stores_searched}
            summary["damaged"] = holdings.damaged
            summary["problems"] = problems
            summary["status"] = "incomplete" if problems else "complete"
            summary["completed"] = datetime.now(UTC).isoformat()
            audit.write({"spider": opts.spider or "", "url": "", "decision": "access_request",
                         **{k: v for k, v in summary.items() if k not in ("feed_files", "searched")}})
            receipts = write_receipts(summary, Path(opts.receipt_dir))
        finally:
            audit.close()
            ledger.close()
            close_stores(stores)
        print(f"{request_id}: {summary['items']} item(s), {summary['files']} file(s), "
              f"{summary['audit_entries']} log entries -> {out}")
        print(f"receipt: {receipts['md']}")
        for problem in problems:
            print(f"incomplete: {problem}", file=sys.stderr)
        if problems:
            self.exitcode = 1
