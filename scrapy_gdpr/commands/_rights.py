"""What gdpr-purge, gdpr-access and gdpr-erase share: finding the ledger, the policy,
the objection list and the audit log from options and project settings."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from scrapy.exceptions import UsageError

from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.config import DEFAULTS, expand
from scrapy_gdpr.ledger import Ledger, LedgerError, Selector, open_ledger, parse_ts
from scrapy_gdpr.policy import Policy, PolicyError, load_policy
from scrapy_gdpr.stores import ItemStore, StoreError, load_item_stores

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="URL", help="ledger URL (default: GDPR_LEDGER)")
    parser.add_argument("--policy", metavar="FILE", help="policy file (default: GDPR_POLICY for --spider)")
    parser.add_argument("--spider", metavar="NAME", help="spider whose policy and audit log to use")
    parser.add_argument("--audit-log", metavar="FILE", help="audit log to append to (default: GDPR_AUDIT_LOG)")


def add_selector_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", action="append", default=[], help="a page or image URL (repeatable)")
    parser.add_argument("--url-prefix", action="append", default=[], help="every URL starting with this")
    parser.add_argument("--domain", action="append", default=[], help="a host and its subdomains")
    parser.add_argument("--contains", action="append", default=[], help="items whose URL or text contain this")
    parser.add_argument("--receipt-dir", metavar="DIR", default="gdpr-requests",
                        help="where receipts are written (default: gdpr-requests/)")


def selectors(opts: argparse.Namespace) -> list[Selector]:
    out = [Selector("url", v) for v in opts.url]
    out += [Selector("prefix", v) for v in opts.url_prefix]
    out += [Selector("domain", v) for v in opts.domain]
    out += [Selector("contains", v) for v in opts.contains]
    if not out:
        raise UsageError("give at least one of --url, --url-prefix, --domain, --contains")
    return out


def ledger(opts: argparse.Namespace, settings: BaseSettings) -> Ledger:
    url = opts.ledger or settings.get("GDPR_LEDGER") or DEFAULTS["GDPR_LEDGER"]
    try:
        return open_ledger(url)
    except LedgerError as exc:
        raise UsageError(str(exc)) from exc


def policy(opts: argparse.Namespace, settings: BaseSettings, required: bool) -> Policy | None:
    path = opts.policy
    if path is None and opts.spider:
        path = expand(settings.get("GDPR_POLICY") or DEFAULTS["GDPR_POLICY"], _Named(opts.spider))  # type: ignore[arg-type]
    if path is None:
        if required:
            raise UsageError("give --policy FILE (or --spider NAME in a project) to find the objection list")
        return None
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise UsageError(str(exc)) from exc


def objections_path(opts: argparse.Namespace, settings: BaseSettings) -> Path:
    """``--objections``, else the policy's list (which every crawl under the policy reads,
    whatever its settings), else ``GDPR_OBJECTIONS`` (which every crawl of the project adds)."""
    explicit = getattr(opts, "objections", None)
    if explicit:
        return Path(explicit)
    pol = policy(opts, settings, required=not settings.get("GDPR_OBJECTIONS"))
    if pol is not None:
        return pol.resolve_path(pol.objections.path)
    return Path(settings.get("GDPR_OBJECTIONS"))


def audit_template(settings: BaseSettings) -> str | None:
    value = settings.get("GDPR_AUDIT_LOG", DEFAULTS["GDPR_AUDIT_LOG"])
    return str(value) if value else None


def audit_log(opts: argparse.Namespace, settings: BaseSettings, default_name: str) -> AuditLog:
    if opts.audit_log:
        return AuditLog(Path(opts.audit_log))
    template = audit_template(settings)
    if not template:
        return AuditLog(None)
    return AuditLog(Path(expand(template, _Named(opts.spider or default_name))))  # type: ignore[arg-type]


def item_stores(settings: BaseSettings) -> list[ItemStore]:
    """The stores of ``GDPR_ITEM_STORES``, opened (a store that cannot be reached stops the command)."""
    try:
        return load_item_stores(settings)
    except StoreError as exc:
        raise UsageError(str(exc)) from exc


def now(opts: argparse.Namespace) -> datetime:
    if getattr(opts, "now", None):
        try:
            return parse_ts(opts.now)
        except ValueError as exc:
            raise UsageError(f"--now {opts.now!r} is not an ISO 8601 time") from exc
    return datetime.now(UTC)
