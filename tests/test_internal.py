"""The marker of scrapy-gdpr's own requests cannot be forged by a spider."""

from __future__ import annotations

import pickle

from scrapy import Request

from scrapy_gdpr.internal import META_KEY, internal_kind, internal_meta


def test_only_the_marker_makes_an_internal_request():
    assert internal_kind(Request("http://a.test/robots.txt", meta=internal_meta("robots"))) == "robots"
    # what a spider can write under the key is an ordinary request
    for forged in ("robots", "terms", {"kind": "robots"}, True):
        assert internal_kind(Request("http://a.test/robots.txt", meta={META_KEY: forged})) is None
    assert internal_kind(Request("http://a.test/")) is None


def test_the_marker_survives_a_request_queue():
    request = Request("http://a.test/terms.html", meta=internal_meta("terms"))
    restored = pickle.loads(pickle.dumps(request.meta))
    assert internal_kind(Request(request.url, meta=restored)) == "terms"
    assert internal_kind(request.replace(url="http://a.test/terms2.html")) == "terms"
