"""What gdpr-purge, gdpr-access and gdpr-erase share: finding the ledger, the policy,
the objection list and the audit log from options and project settings."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import UsageError

from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.config import GdprConfig, expand
from scrapy_gdpr.policy import Policy, PolicyError, load_policy
from scrapy_gdpr.retention.ledger import (
    Ledger,
    LedgerError,
    LedgerMissing,
    Selector,
    SQLiteLedger,
    explain_error,
    open_ledger,
    parse_ts,
)
from scrapy_gdpr.retention.stores import ItemStore, StoreError, load_item_stores

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

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
    parser.add_argument("--contains", action="append", default=[],
                        help="items with a field value containing this text (Unicode-normalised, any case)")
    parser.add_argument("--receipt-dir", metavar="DIR", default="gdpr-requests",
                        help="where receipts are written (default: gdpr-requests/)")
    parser.add_argument("--search-feed", action="append", default=[], metavar="FILE",
                        help="also search this feed file (the ledger's feed files and the local files FEEDS "
                             "names are always searched)")
    parser.add_argument("--yes", action="store_true",
                        help="confirm a request that matches more than 10%% of the items held")


def _url_form(value: str) -> str:
    """A URL as crawls store it: IDNA host and percent-escaped path (as Scrapy
    requests it), scheme and host in lower case, no default port, the root path when
    it has none (``HTTPS://People.Example:443/a`` ->
    ``https://people.example/a``)."""
    from urllib.parse import urlsplit

    from w3lib.url import safe_url_string

    value = value.strip()
    try:
        if any(ord(c) > 127 for c in value) and not any(c.isspace() or ord(c) < 32 for c in value):
            value = safe_url_string(value)  # as Scrapy requests it: IDNA host, percent-escaped path
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return value
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return value
    netloc = parts.netloc.rpartition("@")[2]
    host = netloc.lower()
    if port is not None and port == {"http": 80, "https": 443}[parts.scheme.lower()]:
        host = host.rsplit(":", 1)[0]
    # a URL without a path is its host's root, as Scrapy stores it ("https://a.test/"):
    # so --url-prefix https://a.test never covers https://a.test.example/
    return parts._replace(scheme=parts.scheme.lower(), netloc=host, path=parts.path or "/").geturl()


def _domain_form(value: str) -> str:
    """A host as crawls store it: lower case, IDNA, no trailing dot."""
    from scrapy_gdpr.gate.objections import canonical_host

    value = value.strip()
    if not value:
        return value
    try:
        return canonical_host(value)
    except UnicodeError:
        raise UsageError(f"--domain {value!r} is not a domain name") from None


def selectors(opts: argparse.Namespace) -> list[Selector]:
    from scrapy_gdpr.retention.textmatch import normalise_text

    values = [("url", "--url", _url_form(v)) for v in opts.url]
    values += [("prefix", "--url-prefix", _url_form(v)) for v in opts.url_prefix]
    values += [("domain", "--domain", _domain_form(v)) for v in opts.domain]
    values += [("contains", "--contains", v) for v in opts.contains]
    if not values:
        raise UsageError("give at least one of --url, --url-prefix, --domain, --contains")
    out = []
    for kind, option, value in values:
        if kind == "contains" and not normalise_text(value):
            raise UsageError(f"{option} {value!r} has no text to match (only white space or nothing)")
        try:
            out.append(Selector(kind, value))
        except ValueError as exc:
            raise UsageError(f"{option} {value!r}: {exc}") from None
    return out


class CommandError(Exception):
    """A clear error for the user: printed on stderr (no traceback), exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def report_errors(command: Any, run: Any) -> None:
    """Run ``run()``; a :class:`CommandError` or :class:`LedgerError` is printed on
    stderr with no traceback and sets the command's exit status."""
    try:
        run()
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        command.exitcode = exc.code
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        command.exitcode = 1
    except OSError as exc:  # a receipt, archive or audit-log folder that cannot be written
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}. Fix: check that the folder exists and may be written",
              file=sys.stderr)
        command.exitcode = 1


def config(settings: BaseSettings) -> GdprConfig:
    """The project's ``GDPR_*`` settings, read as a crawl reads them (one :class:`GdprConfig`)."""
    try:
        return GdprConfig.from_settings(settings)
    except ValueError as exc:
        raise UsageError(str(exc), print_help=False) from None


def ledger_url(opts: argparse.Namespace, settings: BaseSettings) -> str:
    """``--ledger``, else the crawl's ledger (``GDPR_LEDGER``, relative to the project root).

    ``GDPR_LEDGER = ""`` means the crawls keep no ledger: then only ``--ledger`` names one,
    never a default file the crawls do not write.
    """
    if opts.ledger:
        return str(opts.ledger)
    url = config(settings).ledger
    if url is None:
        raise UsageError("GDPR_LEDGER is empty in this project's settings, so its crawls keep no ledger; "
                         "give the ledger to use with --ledger URL", print_help=False)
    return url


def ledger(opts: argparse.Namespace, settings: BaseSettings, *, create: bool = False,
           readonly: bool = False) -> Ledger:
    """The ledger; never created by these commands (a crawl creates it), so a wrong
    path is an error instead of a new, empty ledger."""
    return open_ledger(ledger_url(opts, settings), create=create, readonly=readonly)


def ledger_or_empty(opts: argparse.Namespace, settings: BaseSettings, *,
                    readonly: bool = False) -> tuple[Ledger, str]:
    """The ledger and its state: ``ok``, ``empty`` (no rows) or ``missing`` (it does
    not exist: an empty in-memory stand-in is returned, and nothing is created)."""
    try:
        led = ledger(opts, settings, readonly=readonly)
    except LedgerMissing as exc:
        print(f"warning: {exc}", file=sys.stderr)
        stand_in = SQLiteLedger(":memory:")
        stand_in.url = ledger_url(opts, settings)  # what the receipt names: the ledger that was not there
        stand_in.path = None  # type: ignore[assignment]
        return stand_in, "missing"
    with ledger_errors(led):
        return led, ("empty" if led.count() == 0 else "ok")


@contextlib.contextmanager
def ledger_errors(led: Ledger) -> Iterator[None]:
    """Database errors while using the ledger, as a :class:`LedgerError` naming it."""
    try:
        yield
    except sqlite3.Error as exc:
        path = getattr(led, "path", None)
        raise explain_error(str(path or led.display), exc, folder=path.parent if path else None,
                            reading=led.readonly) from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise explain_error(f"database {led.display}", exc, reading=led.readonly) from None
        raise


def feed_paths(opts: argparse.Namespace, settings: BaseSettings) -> list[Path]:
    """Feed files to search besides those the ledger knows: ``--search-feed`` and the
    local files of the project's FEEDS (a ``%(name)s``-style template as a glob)."""
    from scrapy_gdpr.retention.feeds import local_feed_path

    out = [Path(p) for p in getattr(opts, "search_feed", [])]
    for uri in settings.getdict("FEEDS"):
        path = local_feed_path(str(uri))
        if path is None:
            continue
        text = str(path)
        if "%(" in text:
            import re

            pattern = re.sub(r"%\([^)]*\)[a-z]", "*", text)
            base = Path(pattern).parent if Path(pattern).is_absolute() else Path.cwd() / Path(pattern).parent
            if "*" in str(base):
                continue
            out += sorted(base.glob(Path(pattern).name))
        else:
            out.append(path)
    return out


def policy(opts: argparse.Namespace, settings: BaseSettings, required: bool) -> Policy | None:
    path = opts.policy
    if path is None and opts.spider:
        path = config(settings).policy_path(_Named(opts.spider))  # type: ignore[arg-type]
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
    extra = config(settings).objections
    pol = policy(opts, settings, required=not extra)
    if pol is not None:
        return pol.resolve_path(pol.objections.path)
    assert extra is not None
    from scrapy_gdpr.config import from_project_root

    return from_project_root(extra)


def audit_template(settings: BaseSettings) -> str | None:
    return config(settings).audit_log


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
