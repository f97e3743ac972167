"""scrapy gdpr-purge (not implemented yet)."""

from __future__ import annotations

import argparse

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError


class Command(ScrapyCommand):
    requires_project = False
    default_settings = {"LOG_ENABLED": False}

    def short_desc(self) -> str:
        return "(not implemented yet)"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        raise UsageError("gdpr-purge is not implemented yet")
