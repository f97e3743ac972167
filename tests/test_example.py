"""The example project's crawl of its own example site, end to end, as `make demo` runs it."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from tests.gallery import detect, leaked
from tests.utils import ROOT, run_scrapy

EXAMPLE = ROOT / "example_project"
#: The port the example's policy, objection list and spider name; the copy under
#: test names the free port its site is served on instead.
EXAMPLE_PORT = 8760


def _load_serve():
    spec = importlib.util.spec_from_file_location("example_serve", EXAMPLE / "serve.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_copy(tmp_path):
    """A copy of the example project, so the test never touches the real one's output,
    and its site served on a free port (the copy's policy and objections name it)."""
    dest = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("output", "site", "__pycache__"))
    for attempt in range(5):
        try:
            servers = _load_serve().serve(0)
            break
        except OSError:  # the free port on 127.0.0.1 is taken on another address
            if attempt == 4:
                raise
    port = servers[0].server_port
    for name in ("policies/gallery.yaml", "policies/objections.txt"):
        path = dest / name
        path.write_text(path.read_text(encoding="utf-8").replace(f":{EXAMPLE_PORT}/", f":{port}/"), encoding="utf-8")
    yield dest, port
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_example_crawl_end_to_end(example_copy):
    example_copy, port = example_copy
    result = run_scrapy("crawl", "gallery", "-a", f"base=http://127.0.0.1:{port}", cwd=example_copy, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = example_copy / "output"

    # the compliance report counts a refusal for every reason the site demonstrates
    report = json.loads(next((out / "reports").glob("*.json")).read_text(encoding="utf-8"))
    expected = {
        "domain", "jurisdiction", "objection", "optout", "private_network", "terms", "terms_drift",
        "robots", "robots_unreachable", "retry_after", "payment_required", "license", "deny_list",
    }
    assert expected <= set(report["refusals"]), report["refusals"]

    # the audit log has one line per refusal, each with its reason and the policy fingerprint
    audit = [json.loads(line) for line in (out / "audit" / "gallery.jsonl").read_text(encoding="utf-8").splitlines()]
    refused = [a for a in audit if a.get("decision") == "refused"]
    assert len(refused) == sum(r["count"] for r in report["refusals"].values())
    assert {a["policy_fingerprint"] for a in audit} == {report["policy"]["fingerprint"]}

    # items: the gallery pages are stored, the refused ones are not
    items = [json.loads(line) for line in (out / "items" / "gallery.jsonl").read_text(encoding="utf-8").splitlines()]
    urls = {item["url"] for item in items}
    base = f"http://127.0.0.1:{port}"
    assert f"{base}/gallery/street.html" in urls
    assert f"{base}/people/jane.html" not in urls  # objection
    assert f"{base}/optout/noindex.html" not in urls  # X-Robots-Tag: noindex
    assert f"{base}/private/staff.html" not in urls  # robots.txt
    assert f"{base}/optout/content-signal.html" not in urls  # Content-Signal: search=no (header)
    assert f"{base}/optout/content-usage.html" not in urls  # Content-Usage: search=n (header)
    assert f"{base}/licensed/archive.html" not in urls  # the RSL licence does not license search
    assert f"{base}/pay/article.html" not in urls  # HTTP 402
    assert f"{base}/optout/datamining.html" in urls  # the page is kept; its photo is not
    details = {(a["reason"], a["url"]): a["detail"] for a in refused}
    assert "XMP plus:DataMining DMI-PROHIBITED" in details[("optout", f"{base}/images/coffee_no_mining.jpg")]
    assert "does not license search" in details[("license", f"{base}/licensed/archive.html")]
    assert "crawler-price: USD 0.01" in details[("payment_required", f"{base}/pay/article.html")]
    assert "excluded-sites.txt:3" in details[("deny_list", "http://www.spam-farm.example/")]

    # every stored image: redacted (the leak rule against the original photo, and a
    # second detector finds no face), thumbnails made from the redacted image
    stored = {item_image["path"]: item_image["url"] for item in items for item_image in item.get("images", [])}
    assert len(stored) >= 4  # street, astronaut, camera, coffee, cat (one page reserves its image)
    site_images = EXAMPLE / "site" / "127.0.0.1" / "images"
    for path, url in stored.items():
        data = (out / "images" / path).read_bytes()
        original = (site_images / url.rsplit("/", 1)[1]).read_bytes()
        assert detect(data) == [], path
        if url.endswith(("astronaut.png", "city.jpg")):
            assert leaked(original, data) == [], path
        thumb = out / "images" / path.replace("full/", "thumbs/small/")
        assert detect(thumb.read_bytes()) == [], thumb

    # the example project runs the monitor suite (spidermon extra): the site shows a
    # robots.txt answering 503 and a terms drift on purpose, so those two monitors
    # fail; the others pass. The metrics textfile is parsed back with prometheus-client.
    if importlib.util.find_spec("spidermon") is not None:
        log = result.stderr
        expected_monitors = {
            "images stored unchecked": "OK", "retention": "OK", "robots.txt unreachable": "FAIL",
            "terms drift": "FAIL", "refusals": "OK", "items stored": "OK",
        }
        for name, verdict in expected_monitors.items():
            lines = [line for line in log.splitlines() if f"[Spidermon] GDPR: {name}/" in line]
            assert len(lines) == 1 and lines[0].endswith(f"... {verdict}"), (name, lines)
    if importlib.util.find_spec("prometheus_client") is not None:
        from prometheus_client.parser import text_string_to_metric_families

        text = (out / "metrics" / "scrapy_gdpr_gallery.prom").read_text(encoding="utf-8")
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if not s.labels.get("reason")}
        assert samples["scrapy_gdpr_items_stored"] == len(items)
        assert samples["scrapy_gdpr_images_stored_unchecked"] == 0
        assert samples["scrapy_gdpr_terms_drift"] >= 1
