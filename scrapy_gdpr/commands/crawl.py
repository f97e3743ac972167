"""``scrapy crawl`` and ``scrapy runspider``, exiting with scrapy-gdpr's exit statuses.

Scrapy's own commands exit 1 when a crawl could not start and 0 otherwise, so a
crawl whose every request was refused looks successful to a scheduler. These are
Scrapy's commands unchanged (same options, same behaviour), registered under the
same names through the ``scrapy.commands`` entry point; after the crawl they exit
with the status scrapy-gdpr recorded for it (:mod:`scrapy_gdpr.status`). A crawl
that does not use scrapy-gdpr exits as it always did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.commands.runspider import Command as ScrapyRunSpiderCommand
from scrapy.exceptions import UsageError
from scrapy.utils.project import inside_project
from twisted.internet.defer import Deferred

from scrapy_gdpr.activation import addon_active, gdpr_configured, warn_if_inactive
from scrapy_gdpr.exitcodes import StartupRefused, exit_status_of

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from scrapy.crawler import Crawler
    from scrapy.spiders import Spider
    from twisted.python.failure import Failure


class _ExitStatusMixin:
    """Remembers the crawlers the command creates; exits with their worst status."""

    exitcode: int

    def _create_crawler(self, spidercls: type[Spider] | str) -> Crawler:
        crawler: Crawler = super()._create_crawler(spidercls)  # type: ignore[misc]
        self.__dict__.setdefault("_gdpr_crawlers", []).append(crawler)
        # the startproject trap: configured for scrapy-gdpr, but the add-on is not on
        warn_if_inactive(crawler.settings, getattr(crawler.spidercls, "name", "") or "")
        return crawler

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        from scrapy_gdpr.scheduling import report_refusal, scheduler_refusal

        settings = getattr(self, "settings", None)
        refused = (
            scheduler_refusal(settings, lambda project: addon_active(project) or bool(gdpr_configured(project)))
            if settings is not None
            else None
        )
        if refused is not None and settings is not None:  # a Scrapyd job tried to change what protects the crawl
            report_refusal(settings, refused)
            self.exitcode = 3
            return
        process = getattr(self, "crawler_process", None)
        if process is not None and "crawl" not in vars(process):
            process.crawl = _consuming_startup_refusals(process.crawl)
        try:
            super().run(args, opts)  # type: ignore[misc]
        finally:
            self.exitcode = exit_status_of(self.__dict__.get("_gdpr_crawlers", []), self.exitcode)


def _consuming_startup_refusals(crawl: Callable[..., Any]) -> Callable[..., Any]:
    """``crawler_process.crawl``, except that a crawl scrapy-gdpr refused to start (its
    findings already printed) does not end in Twisted's "Unhandled error in Deferred"
    traceback. On asyncio, :mod:`scrapy_gdpr.status` filters asyncio's log instead."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = crawl(*args, **kwargs)
        if isinstance(result, Deferred):
            result.addErrback(_trap_startup_refused)
        return result

    return wrapper


def _trap_startup_refused(failure: Failure) -> None:
    failure.trap(StartupRefused)  # type: ignore[no-untyped-call]  # re-raises anything else


class Command(_ExitStatusMixin, ScrapyCrawlCommand):
    def long_desc(self) -> str:
        return (
            "Run a spider of the current project, by name. Under scrapy-gdpr the exit status says how the "
            "crawl ended: 0 ok, 1 could not start (Scrapy), 2 usage error, 3 refused at start-up (policy or "
            "GDPR_* setting), 4 compliance-blocked (nothing fetched or every item dropped), 5 face stage "
            "unavailable."
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        # Scrapy lists its own crawl command only inside a project; an entry point is
        # listed everywhere, so say what Scrapy would.
        if not inside_project():
            raise UsageError("the crawl command is only available from within a Scrapy project", print_help=False)
        super().run(args, opts)


class RunSpiderCommand(_ExitStatusMixin, ScrapyRunSpiderCommand):
    def long_desc(self) -> str:
        return "Run the spider defined in the given file (exit statuses as for 'scrapy crawl -h')"
