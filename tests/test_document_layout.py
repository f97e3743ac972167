"""The documents people read, measured in real headless Chromium at 1280 px.

The compliance report of a real crawl, the review document and the public crawler
information page: no horizontal overflow, a reasonable height, no table cell
narrower than its longest word, and the compliance report's summary on the first
screen. Set GDPR_TEST_SCREENSHOTS=DIR to keep the full-page screenshots.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from scrapy_gdpr.policy import load_policy
from scrapy_gdpr.review import build_documents, render_notice_html, render_review_html
from tests.test_compliance_report import crawl_with_report
from tests.utils import DATA, chromium_path, coroutine_test, require_service

pytestmark = pytest.mark.requires_chromium

WIDTH = 1280
SCREEN = 900

#: For each table cell: its content width, and the widest word in it (each text
#: node's words measured in that node's own font; a nowrap element is one word).
MEASURE = """() => {
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d');
  const root = document.documentElement;
  const cells = [];
  for (const cell of document.querySelectorAll('td, th')) {
    const cs = getComputedStyle(cell);
    const inner = cell.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    let widest = 0, word = '';
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (el.closest('pre')) continue;
      const st = getComputedStyle(el);
      ctx.font = st.font;
      let text = node.textContent;
      if (st.textTransform === 'uppercase') text = text.toUpperCase();
      const nowrap = el.closest('.tag') !== null || st.whiteSpace === 'nowrap';
      const words = nowrap ? [text.trim()] : text.split(/\\s+/);
      const spacing = parseFloat(st.letterSpacing) || 0;
      for (const w of words) {
        if (!w) continue;
        const width = ctx.measureText(w).width + spacing * w.length;
        if (width > widest) { widest = width; word = w; }
      }
    }
    cells.push({inner, widest, word, text: cell.textContent.trim().slice(0, 60)});
  }
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
          height: root.scrollHeight, cells};
}"""


def check_layout(page: Any, path: Path, name: str, max_height: int) -> dict[str, Any]:
    from PIL import Image, ImageStat

    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    shots = Path(os.environ.get("GDPR_TEST_SCREENSHOTS") or path.parent)
    shots.mkdir(parents=True, exist_ok=True)
    png = shots / f"{name}.png"
    page.screenshot(path=str(png), full_page=True)
    m = page.evaluate(MEASURE)
    with Image.open(png) as image:
        # the whole page, 1280 px wide; mostly white paper with dark text on it
        assert image.width == WIDTH and abs(image.height - m["height"]) <= 2, (name, image.size)
        gray = image.convert("L")
        assert 200 < ImageStat.Stat(gray).mean[0] < 254 and gray.getextrema()[0] < 60, name
    assert m["scrollWidth"] <= m["clientWidth"], (name, "horizontal overflow", m["scrollWidth"], m["clientWidth"])
    assert 600 < m["height"] <= max_height, (name, "page height", m["height"])
    narrow = [c for c in m["cells"] if c["widest"] > c["inner"] + 1]
    assert not narrow, (name, "cells narrower than their longest word", narrow[:5])
    assert len(m["cells"]) > 10, name
    return m


def chromium_page(playwright: Any) -> Any:
    path = chromium_path()
    if path is None:
        require_service("chromium", "no Chromium binary found (set GDPR_TEST_CHROMIUM)")
    browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
    return browser, browser.new_page(viewport={"width": WIDTH, "height": SCREEN})


def in_thread(fn: Any) -> Any:
    """Run ``fn`` on its own thread: Playwright's sync API refuses a thread with a running event loop
    (the tests' reactor runs one)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def _sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("chromium", "the playwright package is not installed")
    return sync_playwright


def test_review_document_and_information_page_layout(tmp_path):
    sync_playwright = _sync_playwright()
    docs = []
    for policy_file, today in ((DATA / "policies" / "warnings.yaml", date(2026, 11, 1)),
                               (DATA / "policies" / "valid.yaml", None)):
        policy = load_policy(policy_file, today=today)
        doc = build_documents(policy, [], today=today)
        stem = policy.policy_id
        review = tmp_path / f"{stem}-review.html"
        review.write_text(render_review_html(doc), encoding="utf-8")
        notice = tmp_path / f"{stem}-crawler-info.html"
        notice.write_text(render_notice_html(doc), encoding="utf-8")
        docs += [(review, f"{stem}-review", 9000), (notice, f"{stem}-crawler-info", 4500)]

    def measure() -> None:
        with sync_playwright() as p:
            browser, page = chromium_page(p)
            try:
                for path, name, max_height in docs:
                    check_layout(page, path, name, max_height)
            finally:
                browser.close()

    in_thread(measure)


@coroutine_test
async def test_compliance_report_layout(tmp_path, mockserver):
    sync_playwright = _sync_playwright()
    crawler, _, _ = await crawl_with_report(tmp_path, mockserver)
    html = Path(crawler.stats.get_value("gdpr/report/html"))
    # Playwright's sync API cannot run inside the test's event loop: measure in a thread
    import asyncio

    def measure() -> dict[str, Any]:
        with sync_playwright() as p:
            browser, page = chromium_page(p)
            try:
                m = check_layout(page, html, "compliance-report", 7000)
                # the summary and the refusals by reason start on the first screen
                top = page.evaluate("() => [document.querySelector('.figures').getBoundingClientRect().bottom,"
                                    " document.querySelector('#refusals').getBoundingClientRect().top]")
                m["summary_bottom"], m["refusals_top"] = top
                return m
            finally:
                browser.close()

    m = await asyncio.get_running_loop().run_in_executor(None, measure)
    assert m["summary_bottom"] <= SCREEN and m["refusals_top"] <= SCREEN, m
