"""scrapy gdpr-purge: delete everything whose retention period is over."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.commands import ScrapyCommand

from scrapy_gdpr.commands import _rights
from scrapy_gdpr.retention.expiry import purge
from scrapy_gdpr.retention.logpurge import purge_logs_and_caches
from scrapy_gdpr.retention.stores import close_stores

if TYPE_CHECKING:
    import argparse


class Command(ScrapyCommand):
    requires_project = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[--dry-run] [--now ISO] [--ledger URL]"

    def short_desc(self) -> str:
        return "Delete expired feed lines, images and files, and their ledger rows"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        _rights.add_common_options(parser)
        parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
        parser.add_argument("--now", metavar="ISO", help="purge as if it were this time (default: now)")
        parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                            help="wait this long for a feed file a crawl is writing (default: skip it)")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument("--shared-queue", action="store_true",
                            help="also clear the spider's shared queue, seen-request fingerprints and fetch "
                            "caches in Redis (GDPR_STATE_URL; needs --spider). They expire by themselves "
                            "after retention.caches")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        _rights.report_errors(self, lambda: self._run(opts))

    def _run(self, opts: argparse.Namespace) -> None:
        assert self.settings is not None
        stores = _rights.item_stores(self.settings)
        moment = _rights.now(opts)
        # never created here: a missing ledger is a wrong path (a crawl creates it);
        # a dry run only reads it
        ledger = _rights.ledger(opts, self.settings, readonly=opts.dry_run)
        audit = _rights.audit_log(opts, self.settings, "purge")
        try:
            with _rights.ledger_errors(ledger):
                if not opts.dry_run:
                    ledger.check_writable()  # before any file is touched
                result = purge(ledger, moment, dry_run=opts.dry_run, audit=audit,
                               spider=opts.spider or "", lock_timeout=opts.wait, stores=stores)
        finally:
            audit.close()
            ledger.close()
            close_stores(stores)
        # logs and caches, per retention.logs and retention.caches (scrapy_gdpr.retention.logpurge)
        logs = purge_logs_and_caches(self.settings, moment, policy_file=opts.policy,
                                     spider=opts.spider, dry_run=opts.dry_run)
        if opts.json:
            print(json.dumps({**result.as_dict(), "deleted": result.deleted, "logs_and_caches": logs.as_dict()},
                             indent=2, default=str))
        else:
            verb = "Would delete" if opts.dry_run else "Deleted"
            for entry in result.deleted:
                print(f"{'would delete' if opts.dry_run else 'deleted'} {entry['kind']}: "
                      f"{entry.get('location', '')} {entry.get('item_id', '')} {entry.get('url', '')}".rstrip())
            print(f"{verb} {result.feed_lines} feed line(s), {result.objects} file(s), "
                  f"{result.ledger_rows} ledger row(s) expired at {result.now}.")
            for name, count in result.store_items.items():
                print(f"{verb} {count} item(s) from item store {name}.")
            print(f"{verb} {logs.audit_lines} audit log line(s), {logs.log_lines} crawl log line(s), "
                  f"{logs.log_files_removed} crawl log file(s), {logs.reports} report file(s), "
                  f"{logs.cache_entries} HTTP cache entries (retention.logs, retention.caches).")
        for note in logs.notes:
            print(note, file=sys.stderr)
        for problem in result.store_errors + logs.problems:
            print(f"error: {problem}", file=sys.stderr)
        for location in result.busy:
            print(f"busy (a crawl is writing it), purged next time: {location}", file=sys.stderr)
        for damaged in result.damaged:
            what = "removed" if damaged["removed"] else "left as it is"
            print(f"torn: {damaged['path']}: {damaged['detail']} ({damaged['characters']} characters, {what})",
                  file=sys.stderr)
        for error in result.errors:
            print(f"not purged: {error['location']}: {error['error']}", file=sys.stderr)
        if opts.shared_queue:
            from scrapy_gdpr.shared.queue import purge_shared

            print(purge_shared(self.settings, opts.spider or "", dry_run=opts.dry_run))
        if result.errors or logs.problems or result.store_errors:
            self.exitcode = 1
        elif result.busy:
            self.exitcode = 2
