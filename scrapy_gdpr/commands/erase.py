"""scrapy gdpr-erase: delete everything matching, everywhere, and object to it for good."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from scrapy_gdpr.commands import _rights
from scrapy_gdpr.gate.objections import ObjectionFileError, ObjectionList
from scrapy_gdpr.retention.rights import erase, find_holdings, needs_confirmation, objection_entries, write_receipts
from scrapy_gdpr.retention.stores import close_stores

if TYPE_CHECKING:
    import argparse


class Command(ScrapyCommand):
    requires_project = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "--url URL | --url-prefix URL | --domain HOST | --contains TEXT"

    def short_desc(self) -> str:
        return "Erase everything held that matches and add it to the objection list"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        _rights.add_common_options(parser)
        _rights.add_selector_options(parser)
        parser.add_argument("--objections", metavar="FILE",
                            help="objection list (default: GDPR_OBJECTIONS, else the policy's objections.path)")
        parser.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                            help="how long to wait for a feed file a crawl is writing (default 30)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        _rights.report_errors(self, lambda: self._run(opts))

    def _run(self, opts: argparse.Namespace) -> None:
        assert self.settings is not None
        sels = _rights.selectors(opts)
        try:
            entries = objection_entries(sels)  # every value checked before anything is written
        except ValueError as exc:
            raise UsageError(f"{exc}; nothing was erased or written") from None
        objections = _rights.objections_path(opts, self.settings)
        stores = _rights.item_stores(self.settings)
        ledger, state = _rights.ledger_or_empty(opts, self.settings)
        audit = _rights.audit_log(opts, self.settings, "rights")
        try:
            with _rights.ledger_errors(ledger):
                if state != "missing":
                    ledger.check_writable()  # before anything is written anywhere
                feeds = _rights.feed_paths(opts, self.settings)
                reason = needs_confirmation(find_holdings(ledger, sels, feeds=feeds, stores=stores))
                if reason and not opts.yes:
                    raise _rights.CommandError(f"nothing was erased: {reason}", code=2)
                # the other crawl machines hear of the objection first, before the feed
                # files are rewritten (which may wait --wait seconds for a crawl writing
                # one): their workers refuse it within the stated bound of this moment
                shared = self._publish([f"{kind} {value}" for kind, value in entries]) if objections else ""
                result = erase(ledger, sels, objections_path=objections, audit=audit, lock_timeout=opts.wait,
                               feeds=feeds, ledger_state=state, stores=stores)
        finally:
            audit.close()
            ledger.close()
            close_stores(stores)
        data = {"kind": "erasure", **result.as_dict(), "objection_list": str(objections)}
        receipts = write_receipts(data, Path(opts.receipt_dir))
        print(f"{result.request_id}: {result.feed_lines} feed line(s), {len(result.objects)} file(s), "
              f"{result.ledger_rows} ledger row(s) erased; objections added: {len(result.objections_added)}")
        print(f"receipt: {receipts['md']} (status: {data['status']})")
        for location in result.pending:
            print(f"not yet erased (a crawl is writing it; run again): {location}", file=sys.stderr)
        for failed in result.failed:
            print(f"not erased: {failed['location']}: {failed['error']}", file=sys.stderr)
        for problem in result.store_errors:
            print(f"not erased (item store failed; run again): {problem}", file=sys.stderr)
        for problem in result.problems:
            print(f"incomplete: {problem}", file=sys.stderr)
        self._check_objection_list(objections)
        if shared:
            print(shared, file=sys.stderr if shared.startswith("warning") else sys.stdout)
        if not result.complete:
            self.exitcode = 1

    def _publish(self, lines: list[str]) -> str:
        """Several crawl machines (GDPR_STATE_URL): the objections reach every worker.
        Returns the line to print once the erasure is done ("" when not configured or
        failed: the failure is printed at once)."""
        from scrapy_gdpr.gate.shared_objections import publish

        try:
            return publish(self.settings, lines)
        except Exception as exc:  # noqa: BLE001 - any failure to share it is reported with its fix
            print(f"not shared with the other crawl machines: {type(exc).__name__}: {exc}. Fix: check Redis "
                  "(GDPR_STATE_URL) and the PostgreSQL ledger, then run the erasure again", file=sys.stderr)
            self.exitcode = 1
            return ""

    @staticmethod
    def _check_objection_list(path: Path) -> None:
        """Report lines of the list that crawls cannot read (written by hand or by an
        older version): the erasure's own entries are valid, but a crawl reads the
        whole file."""
        try:
            bad = ObjectionList.from_file(path, on_invalid="skip").skipped
        except ObjectionFileError as exc:
            bad = [str(exc)]
        for line in bad:
            print(f"warning: objection list: {line}; crawls refuse to start until it is fixed (or the policy "
                  "sets objections.on_invalid: skip)", file=sys.stderr)
