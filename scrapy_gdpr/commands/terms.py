"""scrapy gdpr-terms URL [--save DIR]: fingerprint a terms page for a reviewer."""

from __future__ import annotations

import argparse
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.http import Headers
from scrapy.responsetypes import responsetypes

from scrapy_gdpr.terms import fingerprint, normalise_terms

TIMEOUT = 30.0


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options] <url>"

    def short_desc(self) -> str:
        return "Print the fingerprint and normalised text of a terms-of-use page"

    def long_desc(self) -> str:
        return (
            "Fetch a terms-of-use page, normalise its text exactly as the crawl's terms check "
            "does, and print its fingerprint and text for the reviewer to record in the policy "
            "(domains[].terms.fingerprint). With --save DIR, also write the text to a snapshot "
            "file, which the compliance report diffs against when the terms change."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--save", metavar="DIR", help="write the normalised text to DIR/<host>.terms.txt")
        parser.add_argument("--user-agent", metavar="UA", help="User-Agent to send (default: the USER_AGENT setting)")
        parser.add_argument("--text", dest="show_text", action=argparse.BooleanOptionalAction, default=True,
                            help="print the normalised text (default: yes)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one URL")
        url = args[0]
        if not re.match(r"^https?://[^\s/]+", url):
            raise UsageError(f"{url!r} is not an absolute http(s) URL")
        assert self.settings is not None
        user_agent = opts.user_agent or self.settings.get("USER_AGENT") or "scrapy-gdpr terms check"
        try:
            status, final_url, headers, body = _fetch(url, user_agent)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"error: cannot fetch {url}: {exc}", file=sys.stderr)
            self.exitcode = 1
            return
        if status != 200:
            print(f"error: {url} answered HTTP {status}; the crawl would refuse this domain", file=sys.stderr)
            self.exitcode = 1
            return
        response_cls = responsetypes.from_args(headers=headers, url=final_url, body=body)
        response = response_cls(url=final_url, status=status, headers=headers, body=body)
        text = normalise_terms(response)
        fp = fingerprint(text)
        if not text:
            ctype = headers.get("Content-Type", b"").decode("latin-1") or "unknown type"
            print(f"error: {url} has no readable text ({ctype}); the crawl would refuse this domain, "
                  "since changes to it cannot be detected", file=sys.stderr)
            self.exitcode = 1
            return
        print(f"url: {url}")
        if final_url != url:
            print(f"redirected to: {final_url}")
        print(f"fingerprint: {fp}")
        if opts.show_text:
            print(f"--- normalised text ({len(text.splitlines())} lines) ---")
            print(text)
            print("--- end ---")
        if opts.save:
            folder = Path(opts.save)
            folder.mkdir(parents=True, exist_ok=True)
            host = (urlsplit(url).hostname or "terms").lower()
            path = folder / f"{host}.terms.txt"
            path.write_text(text + "\n", encoding="utf-8")
            print(f"saved: {path}")
            print("Record under the domain's terms in the policy (run from the policy's folder, "
                  "the snapshot path below is already relative to the policy file):")
            print(f'  fingerprint: "{fp}"')
            print(f"  snapshot: {path.as_posix()}")


def _fetch(url: str, user_agent: str) -> tuple[int, str, Headers, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept-Encoding": "identity"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:  # noqa: S310 (http(s) checked above)
            return resp.status, resp.geturl(), _headers(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, url, _headers(exc.headers.items()), exc.read()


def _headers(items: Any) -> Headers:
    values: dict[str, list[str]] = {}
    for name, value in items:
        values.setdefault(name, []).append(value)
    return Headers(values)
