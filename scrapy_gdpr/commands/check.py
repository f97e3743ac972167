"""``scrapy gdpr-check``: is scrapy-gdpr really protecting each spider of the project?

For ops teams and CI before a deploy: for every spider (or those named) it checks
that the add-on (or each component) is active, the policy file it resolves to and
whether it is valid, that the stores, audit log, report folder and ledger are
writable and reachable, the state of Scrapy's code-execution consoles, and exports
(FEEDS) that would bypass the retention stamp. Nothing is crawled, nothing written.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.spiderloader import get_spider_loader

from scrapy_gdpr.activation import active_components, addon_active, settings_module_note
from scrapy_gdpr.commands.lint import check_policy, parse_today
from scrapy_gdpr.config import DEFAULTS, GdprConfig
from scrapy_gdpr.consoles import CONSOLE_SETTINGS, remote_consoles

if TYPE_CHECKING:
    import argparse

    from scrapy.settings import BaseSettings

Level = Literal["ok", "warning", "problem"]


@dataclass
class Check:
    name: str
    level: Level
    message: str


@dataclass
class SpiderReport:
    spider: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, level: Level, message: str) -> None:
        self.checks.append(Check(name, level, message))

    @property
    def problems(self) -> int:
        return sum(c.level == "problem" for c in self.checks)

    @property
    def warnings(self) -> int:
        return sum(c.level == "warning" for c in self.checks)


def writable_dir(path: Path) -> str | None:
    """None when files can be created in ``path`` (or the folders leading to it can be
    made); else why not. Creates nothing."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"no existing folder above {path}"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def writable_file(path: Path) -> str | None:
    if path.exists():
        if not path.is_file():
            return f"{path} is not a regular file"
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
        return None
    return writable_dir(path.parent)


def check_store(report: SpiderReport, name: str, value: Any) -> None:
    uri = str(value)
    scheme = urlsplit(uri).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a path (or a Windows drive letter)
        path = from_cwd(uri.removeprefix("file://"))
        why = writable_dir(path)
        report.add(name, "problem" if why else "ok", why or f"{path} is writable")
    else:
        report.add(name, "warning", f"{uri}: remote storage ({scheme}) is not checked; make sure it is reachable")


def from_cwd(value: str) -> Path:
    # Scrapy resolves IMAGES_STORE, FILES_STORE and FEEDS against the current folder
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def check_ledger(report: SpiderReport, url: str | None) -> None:
    if not url:
        report.add("ledger", "problem", "GDPR_LEDGER is empty: retention cannot be enforced without a ledger")
        return
    if url.startswith("sqlite:///"):
        path = Path(unquote(url[len("sqlite:///") :]))
        why = writable_file(path)
        report.add("ledger", "problem" if why else "ok", why or f"SQLite ledger {path} is writable")
        return
    from scrapy_gdpr.retention.ledger import open_ledger
    from scrapy_gdpr.urls import mask_password

    try:
        ledger = open_ledger(url)
        ledger.close()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the finding
        report.add("ledger", "problem", f"{mask_password(url)} is not reachable: {type(exc).__name__}: {exc}")
    else:
        report.add("ledger", "ok", f"{mask_password(url)} is reachable")


def check_feeds(report: SpiderReport, settings: BaseSettings) -> None:
    feeds = settings.getdict("FEEDS")
    if not feeds:
        report.add("feeds", "ok", "no FEEDS exports configured")
        return
    for uri, given in feeds.items():
        options = dict(given or {})
        label = f"feed {uri}"
        if options.get("item_filter") is not None:
            report.add(label, "problem", "sets its own item_filter, which replaces the retention filter: unstamped "
                       "items could be exported (remove item_filter, or subclass scrapy_gdpr.retention.stamp.RetentionItemFilter)")
            continue
        fields = options.get("fields")
        if isinstance(fields, dict):
            report.add(label, "problem", "'fields' is a mapping without the retention stamp: exported items would "
                       "lose it (list the fields, or add the stamp field to the mapping)")
            continue
        fmt = str(options.get("format") or "")
        exporters = settings.getdict("FEED_EXPORTERS")
        if fmt in ("csv", "xml") and fmt in exporters:
            report.add(label, "problem", f"FEED_EXPORTERS replaces the {fmt} exporter: the retention stamp would not be "
                       "flattened into the export (remove the override, or subclass scrapy-gdpr's exporter)")
            continue
        scheme = urlsplit(str(uri)).scheme
        if scheme not in ("", "file") and len(scheme) > 1:
            report.add(label, "warning", f"remote storage ({scheme}): items are stamped, but gdpr-purge and "
                       "gdpr-erase cannot reach this copy; purge it by other means")
            continue
        report.add(label, "ok", "exports stamped items")


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options] [SPIDER ...]"

    def short_desc(self) -> str:
        return "Check that scrapy-gdpr really protects every spider (for CI, before a deploy)"

    def long_desc(self) -> str:
        return (
            "For every spider of the project (or those named), check that scrapy-gdpr is active, the policy file "
            "it resolves to and whether it is valid, that the stores, audit log, report folder and ledger are "
            "writable and reachable, the state of Scrapy's code-execution consoles, and exports (FEEDS) that "
            "would bypass the retention stamp. Nothing is crawled. Exit status: 0 when nothing is wrong (warnings "
            "are printed but do not fail unless --strict is given), 1 on any problem, 2 on a usage error."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--strict", action="store_true", help="fail on warnings too")
        parser.add_argument("--format", dest="format", choices=("text", "json"), default="text",
                            help="output format (default: text)")
        parser.add_argument("--today", metavar="YYYY-MM-DD", default=None,
                            help="check policy review dates as if today were this day")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        today = parse_today(opts.today)
        loader = get_spider_loader(self.settings)
        names = sorted(loader.list())
        unknown = [a for a in args if a not in names]
        if unknown:
            raise UsageError(f"no spider named {', '.join(map(repr, unknown))} in this project "
                             f"(spiders: {', '.join(names) or 'none'})", print_help=False)
        reports = [self.check_spider(name, loader.load(name), today) for name in (args or names)]
        failed = any(r.problems or (opts.strict and r.warnings) for r in reports)
        self.exitcode = 1 if failed else 0
        if opts.format == "json":
            out = {
                "ok": not failed,
                "strict": opts.strict,
                "spiders": [
                    {"spider": r.spider, "problems": r.problems, "warnings": r.warnings,
                     "checks": [c.__dict__ for c in r.checks]}
                    for r in reports
                ],
            }
            print(json.dumps(out, indent=2, ensure_ascii=False))
            return
        if not reports:
            print("no spiders found: nothing to check")
            return
        marks = {"ok": "ok     ", "warning": "WARNING", "problem": "PROBLEM"}
        for r in reports:
            state = "OK" if not r.problems else f"{r.problems} problem(s)"
            if r.warnings:
                state += f", {r.warnings} warning(s)"
            print(f"spider {r.spider}: {state}")
            for c in r.checks:
                print(f"  {marks[c.level]} {c.name}: {c.message}")
        problems = sum(r.problems for r in reports)
        warnings = sum(r.warnings for r in reports)
        print(f"{len(reports)} spider(s) checked: {problems} problem(s), {warnings} warning(s)",
              file=sys.stdout)

    def check_spider(self, name: str, spidercls: Any, today: Any) -> SpiderReport:
        assert self.settings is not None
        report = SpiderReport(name)
        settings = self.settings.copy()
        spidercls.update_settings(settings)

        # 1. is it active?
        if not settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
            report.add("scrapy-gdpr", "problem", "switched off by GDPR_ENABLED = False: the crawl is not gated")
            return report
        components = active_components(settings)
        if addon_active(settings):
            report.add("scrapy-gdpr", "ok", "the add-on is active (scrapy_gdpr.Addon in ADDONS)")
        elif any(components.values()):
            report.add("scrapy-gdpr", "warning", "the add-on is not in ADDONS; components enabled alone: "
                       + ", ".join(p for p, on in components.items() if on))
            for path, on in components.items():
                if not on:
                    report.add(path, "warning", "not enabled")
        else:
            note = settings_module_note(settings)
            report.add("scrapy-gdpr", "problem", "NOT active: no gate, no face stage, no retention. Add "
                       '"scrapy_gdpr.Addon": 0 to the ADDONS dict in settings.py' + (f" ({note})" if note else ""))

        # 2. the policy
        try:
            config = GdprConfig.from_settings(settings)
        except ValueError as exc:
            report.add("settings", "problem", str(exc))
            return report
        policy_file = config.policy_path(spidercls)
        policy, findings = check_policy(policy_file, today)
        errors = [f for f in findings if f.severity == "error"]
        if policy is None:
            report.add("policy", "problem", f"{policy_file} is invalid: {len(errors)} error(s)")
            for f in errors:
                report.add("policy", "problem", str(f))
        else:
            report.add("policy", "ok", f"{policy_file}: valid ({policy.policy_id}, {policy.fingerprint})")
            for f in findings:
                if f.severity == "warning":
                    report.add("policy", "warning", str(f))
            objections = policy.resolve_path(policy.objections.path)
            if objections.exists() and not os.access(objections, os.R_OK):
                report.add("objection list", "problem", f"{objections} is not readable")
            else:
                why = writable_file(objections)
                report.add("objection list", "problem" if why else "ok",
                           why or f"{objections} ({'exists' if objections.exists() else 'created on first erasure'})")

        # 3. where data goes
        audit = config.audit_log_path(spidercls)
        if audit is None:
            report.add("audit log", "warning", "GDPR_AUDIT_LOG is empty: refusals are not recorded")
        else:
            why = writable_file(audit)
            report.add("audit log", "problem" if why else "ok", why or f"{audit} is writable")
        if config.report_dir:
            why = writable_dir(Path(config.report_dir))
            report.add("report folder", "problem" if why else "ok", why or f"{config.report_dir} is writable")
        check_ledger(report, config.ledger)
        for store in ("IMAGES_STORE", "FILES_STORE"):
            if settings.get(store):
                check_store(report, store, settings.get(store))

        # 4. consoles
        consoles = (
            remote_consoles(settings)
            if addon_active(settings)
            else {n: settings.getbool(n) for n in CONSOLE_SETTINGS}
        )
        for setting, on in consoles.items():
            if on:
                report.add(setting, "warning", "on: anyone who can reach it runs Python inside "
                           "the crawler, gate included")
            else:
                report.add(setting, "ok", "off")

        # 5. exports
        check_feeds(report, settings)
        return report
