"""``scrapy gdpr-lint``: validate policy files, for a person or a CI job."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.spiderloader import get_spider_loader
from scrapy.utils.project import inside_project

from scrapy_gdpr.config import DEFAULTS, GdprConfig
from scrapy_gdpr.policy import Finding, Policy, PolicyError, load_policy

if TYPE_CHECKING:
    import argparse


def parse_today(value: str | None) -> date | None:
    """The ``--today`` option: check dates as if today were this day."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--today must be a date written as YYYY-MM-DD, not {value!r}", print_help=False) from None


def check_policy(path: Path, today: date | None) -> tuple[Policy | None, list[Finding]]:
    """Load ``path``; return the policy (or None) and every finding, errors and warnings."""
    try:
        policy = load_policy(path, today=today)
    except PolicyError as exc:
        return None, list(exc.findings)
    from scrapy_gdpr.gate.denylist import deny_lists

    _, problems = deny_lists(policy)  # the files it names: a malformed line stops the crawl
    if problems:
        return None, [*problems, *policy.warnings]
    return policy, policy.warnings


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options] [POLICY ...]"

    def short_desc(self) -> str:
        return "Check GDPR policy files (of every spider, with no argument)"

    def long_desc(self) -> str:
        return (
            "Check GDPR policy files and list every problem as FILE:LINE: SEVERITY: KEY: MESSAGE (fix: ...). "
            "With no argument, check the policy of every spider of the current project (its gdpr_policy "
            "attribute, or GDPR_POLICY with %(name)s expanded). Exit status: 0 when every policy is valid "
            "(warnings are printed but do not fail unless --strict is given), 1 when a policy is missing or "
            "invalid, 2 on a usage error."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--strict", action="store_true", help="fail on warnings too")
        parser.add_argument(
            "--format", dest="format", choices=("text", "json"), default="text", help="output format (default: text)"
        )
        parser.add_argument(
            "--explain", metavar="KEY", default=None,
            help="print the documentation of a policy field (e.g. faces.action, domains.terms.fingerprint; "
            "'policy' lists the top-level keys) and exit",
        )
        parser.add_argument(
            "--today", metavar="YYYY-MM-DD", default=None,
            help="check review dates as if today were this day (e.g. the day a crawl is planned)",
        )

    def _targets(self, args: list[str]) -> dict[Path, list[str]]:
        """Policy file -> the spiders that use it (none for files named on the command line)."""
        if args:
            return {Path(a): [] for a in args}
        if not inside_project():
            raise UsageError(
                "no policy file given, and not inside a Scrapy project: give the policy file(s) to check, "
                "or run this command in a project to check the policy of every spider",
                print_help=False,
            )
        assert self.settings is not None
        loader = get_spider_loader(self.settings)
        targets: dict[Path, list[str]] = {}
        for name in sorted(loader.list()):
            spidercls = loader.load(name)
            settings = self.settings.copy()
            spidercls.update_settings(settings)
            if not settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
                print(f"spider {name}: scrapy-gdpr is disabled (GDPR_ENABLED = False), not checked", file=sys.stderr)
                continue
            path = GdprConfig.from_settings(settings).policy_path(spidercls)
            targets.setdefault(path, []).append(name)
        return targets

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if opts.explain is not None:
            self.exitcode = _explain(opts.explain)
            return
        today = parse_today(opts.today)
        targets = self._targets(args)
        results: list[dict[str, Any]] = []
        for path, spiders in targets.items():
            policy, findings = check_policy(path, today)
            results.append(
                {
                    "file": str(path),
                    "spiders": spiders,
                    "valid": policy is not None,
                    "policy_id": policy.policy_id if policy is not None else None,
                    "fingerprint": policy.fingerprint if policy is not None else None,
                    "errors": sum(f.severity == "error" for f in findings),
                    "warnings": sum(f.severity == "warning" for f in findings),
                    "findings": findings,
                }
            )
        failed = [r for r in results if r["errors"] or (opts.strict and r["warnings"])]
        self.exitcode = 1 if failed else 0
        if opts.format == "json":
            out = {
                "ok": not failed,
                "strict": opts.strict,
                "policies": [
                    {**r, "findings": [_finding_dict(f) for f in r["findings"]]} for r in results
                ],
            }
            print(json.dumps(out, indent=2, ensure_ascii=False))
            return
        if not results:
            print("no spiders found: nothing to check")
            return
        for r in results:
            who = f" (spider{'s' if len(r['spiders']) > 1 else ''} {', '.join(r['spiders'])})" if r["spiders"] else ""
            if r["valid"]:
                state = "OK" + (f", {r['warnings']} warning(s)" if r["warnings"] else "")
                if opts.strict and r["warnings"]:
                    state = f"FAILED (--strict): {r['warnings']} warning(s)"
            else:
                state = f"INVALID: {r['errors']} error(s)" + (f", {r['warnings']} warning(s)" if r["warnings"] else "")
            print(f"{r['file']}{who}: {state}")
            for finding in r["findings"]:
                print(f"  {finding}")
        errors = sum(r["errors"] for r in results)
        warnings = sum(r["warnings"] for r in results)
        print(f"{len(results)} polic{'y' if len(results) == 1 else 'ies'} checked: {errors} error(s), {warnings} warning(s)")


def _explain(key: str) -> int:
    from scrapy_gdpr.policy.explain import explain, suggestions

    text = explain(key)
    if text is None:
        close = suggestions(key)
        hint = f"; did you mean {', '.join(close)}?" if close else "; 'scrapy gdpr-lint --explain policy' lists the keys"
        print(f"no policy field {key!r}{hint}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {"file": f.file, "line": f.line, "path": f.path, "severity": f.severity, "message": f.message, "fix": f.fix}
