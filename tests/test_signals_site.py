"""Every signal, in each of its carriers, saying yes, no, and something that cannot be read.

The local site ``tests/site/hosts/signals`` carries them all; the images with XMP come
from ``optout-xmp``, and the C2PA manifests are signed here with c2pa-python (as in
``test_contentcredentials``). The crawl serves two purposes: ``search`` and ``training``
(``ai-train``, with its own product token ``GdprTestBot-AI``). For each carrier, "yes"
keeps the page for training, "no" refuses training (or the page, when no purpose is
left), and a malformed value fails closed exactly like "no".
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from scrapy.utils.test import get_crawler

from scrapy_gdpr.optout import OptOutMiddleware
from scrapy_gdpr.paywall import PaymentRequiredMiddleware
from scrapy_gdpr.robots import RobotsGateMiddleware
from scrapy_gdpr.rsl import LicenceMiddleware
from tests.conftest import MockServer
from tests.test_optout import VALID, CollectSpider, crawl_settings
from tests.utils import coroutine_test

HOSTS = Path(__file__).parent / "site" / "hosts"

#: (kind, reserved purposes, reason): the page is kept with nothing reserved, kept with
#: those purposes reserved for that reason, or refused (not fetched, or not stored).
KEPT = ("kept", set(), "")
TRAINING_OPTOUT = ("reserved", {"ai-train"}, "optout")
TRAINING_LICENSE = ("reserved", {"ai-train"}, "license")


def refused(reason: str) -> tuple[str, set[str], str]:
    return ("refused", set(), reason)


#: carrier -> (path pattern, {value: expected})
CARRIERS: dict[str, tuple[str, dict[str, tuple[str, set[str], str]]]] = {
    # robots.txt lines of the crawler's group: decided before the fetch, for the whole request
    "robots.txt Content-Signal": ("/robots-cs/{}.html", {
        "yes": KEPT, "no": refused("optout"), "bad": refused("optout")}),
    "robots.txt Content-Usage": ("/robots-cu/{}.html", {
        "yes": KEPT, "no": refused("optout"), "bad": refused("optout")}),
    "robots.txt group of the purpose's own token": ("/token/{}.html", {
        "yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "robots.txt License (RSL)": ("/rsl-robots/{}.html", {
        "yes": KEPT, "no": TRAINING_LICENSE, "bad": refused("license")}),
    # response headers
    "Content-Signal header": ("/cs-header/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "Content-Usage header": ("/cu-header/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "X-Robots-Tag header": ("/x-robots-tag/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "Robots-Tag header": ("/robots-tag/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "tdm-reservation header": ("/tdm-header/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "Link header (RSL)": ("/rsl-header/{}.html", {
        "yes": KEPT, "no": TRAINING_LICENSE, "bad": ("reserved", {"search", "ai-train"}, "license")}),
    "HTTP 402": ("/pay/{}.html", {"yes": KEPT, "no": refused("payment_required"), "bad": refused("payment_required")}),
    # the HTML page
    "meta robots": ("/meta-robots/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "meta tdm-reservation": ("/tdm-meta/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    "<link rel=license> (RSL)": ("/rsl-link/{}.html", {
        "yes": KEPT, "no": TRAINING_LICENSE, "bad": ("reserved", {"search", "ai-train"}, "license")}),
    "<script type=application/rsl+xml> (RSL inline)": ("/rsl-inline/{}.html", {
        "yes": KEPT, "no": TRAINING_LICENSE, "bad": ("reserved", {"search", "ai-train"}, "license")}),
    # site-wide files
    "tdmrep.json": ("/tdm-file/{}.html", {"yes": KEPT, "no": TRAINING_OPTOUT, "bad": TRAINING_OPTOUT}),
    # inside the file: an image is refused outright when a purpose of the crawl is reserved
    "XMP plus:DataMining": ("/xmp/{}.jpg", {"yes": KEPT, "no": refused("optout"), "bad": refused("optout")}),
    "C2PA training-and-mining": ("/c2pa/{}.jpg", {"yes": KEPT, "no": refused("optout"), "bad": refused("optout")}),
}


@pytest.fixture(scope="module")
def signals_site(tmp_path_factory: pytest.TempPathFactory):
    from tests.test_contentcredentials import damaged_image, signed_image

    site = tmp_path_factory.mktemp("signals-site")
    host = site / "hosts" / "signals"
    shutil.copytree(HOSTS / "signals", host)
    (site / "default").mkdir()
    (host / "xmp").mkdir()
    for name, source in (("yes", "allowed.jpg"), ("no", "train.jpg"), ("bad", "broken.jpg")):
        shutil.copy(HOSTS / "optout-xmp" / source, host / "xmp" / f"{name}.jpg")
    (host / "c2pa").mkdir()
    (host / "c2pa" / "yes.jpg").write_bytes(signed_image({"cawg.ai_training": {"use": "allowed"}}))
    (host / "c2pa" / "no.jpg").write_bytes(signed_image({"cawg.ai_training": {"use": "notAllowed"}}))
    (host / "c2pa" / "bad.jpg").write_bytes(damaged_image())
    with MockServer(site=site) as server:  # binds a free port
        yield server


def two_purpose_policy(tmp_path: Path) -> Path:
    data = yaml.safe_load(VALID.read_text(encoding="utf-8"))
    search = data["purposes"][0]
    search["signal_purposes"] = ["search"]
    training = {**search, "id": "training", "signal_purposes": ["ai-train"], "product_token": "GdprTestBot-AI"}
    data["purposes"] = [search, training]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def outcome(crawler: Any, url: str) -> tuple[str, set[str], str]:
    failure = crawler.spider.failures.get(url)
    if failure is not None:
        return ("refused", set(), getattr(failure, "reason", type(failure).__name__))
    result = crawler.spider.results.get(url)
    if result is None:
        return ("missing", set(), "")
    reserved = {p: d for p, d in result["optout"].items() if not d["allowed"]}
    if not reserved:
        return KEPT
    reasons = {d["reason"] for d in reserved.values()}
    return ("reserved", set(reserved), reasons.pop() if len(reasons) == 1 else str(sorted(reasons)))


@coroutine_test
async def test_every_signal_in_every_carrier_says_yes_no_and_fails_closed(tmp_path, signals_site):
    urls = {(carrier, value): signals_site.url(pattern.format(value), host="signals.test")
            for carrier, (pattern, expected) in CARRIERS.items() for value in expected}
    settings = crawl_settings(tmp_path, two_purpose_policy(tmp_path), DOWNLOADER_MIDDLEWARES={
        RobotsGateMiddleware: 100, OptOutMiddleware: 120, LicenceMiddleware: 125, PaymentRequiredMiddleware: 570})
    crawler = get_crawler(CollectSpider, settings)
    await crawler.crawl_async(urls=list(urls.values()))
    got = {key: outcome(crawler, url) for key, url in urls.items()}
    wanted = {(carrier, value): exp for carrier, (_, expected) in CARRIERS.items() for value, exp in expected.items()}
    wrong = {key: (got[key], wanted[key]) for key in wanted if got[key] != wanted[key]}
    assert not wrong, "\n".join(f"{c} {v}: got {g}, want {w}" for (c, v), (g, w) in wrong.items())
    # every malformed value was logged and counted under its source
    stats = crawler.stats.get_stats()
    for source in ("content_signal", "content_usage", "x_robots_tag", "robots_tag", "meta_robots",
                   "tdmrep_header", "tdmrep_meta", "xmp", "c2pa", "rsl"):
        assert stats.get(f"gdpr/optout/malformed/{source}"), source
