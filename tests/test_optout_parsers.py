"""The opt-out parsers on their own: edge cases that need no server."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from scrapy.http import HtmlResponse

from scrapy_gdpr.optout import (
    match_tdmrep,
    parse_content_usage,
    parse_meta_robots,
    parse_robots_tag,
    parse_tdmrep_file,
    parse_x_robots_tag,
)

TOKEN = "GdprTestBot"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def rules(*values: str) -> dict[str, str]:
    return parse_x_robots_tag(values, TOKEN, now=NOW).rules


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["noindex, nofollow"], {"noindex", "nofollow"}),
        (["NOINDEX", "NoAI"], {"noindex", "noai"}),
        (["gdprtestbot: noindex"], {"noindex"}),
        (["otherbot: noindex"], set()),
        (["otherbot: noindex, GdprTestBot: noai, nofollow"], {"noai", "nofollow"}),
        (["GdprTestBot: noai, otherbot: noindex, nofollow"], {"noai"}),
        (["noarchive, otherbot: noindex"], {"noarchive"}),
        # a date with commas is one rule, not a bot named "unavailable_after"
        (["unavailable_after: Sat, 25 Aug 2007 15:00:00 GMT, noai"], {"noindex", "noai"}),
        (["unavailable_after: Wednesday, 03-Nov-21 15:00:00 GMT"], {"noindex"}),
        (["unavailable_after: 2025-12-31"], {"noindex"}),
        (["unavailable_after: 2099-12-31T00:00:00Z"], set()),
        (["max-snippet: 20, max-image-preview: large, nosnippet"], {"nosnippet"}),
        (["none"], {"none", "noindex", "nofollow"}),
        # draft syntax inside X-Robots-Tag, and Google-style scoping inside the draft's global part
        (["noimageai; GdprTestBot=noindex; otherbot=noai"], {"noimageai", "noindex"}),
        (["GdprTestBot: noindex; otherbot=noai"], {"noindex"}),
        (["*=noai"], {"noai"}),
        # damaged values still carrying a restriction
        (["noindex garbage"], {"noindex"}),
        (["noai;"], {"noai"}),
        ([""], set()),
        (["@@@: ???"], set()),
        # malformed fails closed: an unreadable crawler name's rules apply, an unreadable date may have passed
        (["bad bot: noindex"], {"noindex"}),
        (["360Spider: noindex, bot.v2: noai"], set()),  # readable names of other crawlers
        (["unavailable_after: soon"], {"noindex"}),
    ],
)
def test_x_robots_tag(values, expected):
    assert set(rules(*values)) == expected


def test_x_robots_tag_problems_are_reported():
    out = parse_x_robots_tag(["@@@: ???", "unavailable_after: soon", "noindex garbage"], TOKEN, now=NOW)
    assert len(out.problems) == 3


def test_robots_tag_draft():
    out = parse_robots_tag(["noindex, nosnippet; ExampleBot=;"], "examplebot", now=NOW)
    assert set(out.rules) == {"noindex", "nosnippet"}
    out = parse_robots_tag(["nosnippet; GdprTestBot=noai; otherbot=noindex"], TOKEN, now=NOW)
    assert out.rules == {"nosnippet": "Robots-Tag: nosnippet", "noai": "Robots-Tag: GdprTestBot=noai"}
    # a crawler name that cannot be read may be ours: its rules apply, in doubt
    out = parse_robots_tag(["bad bot=noindex"], TOKEN, now=NOW)
    assert out.rules == {"noindex": "Robots-Tag: bad bot=noindex"} and out.problems


def test_meta_robots_head_only_and_tdm():
    body = b"""<html><head><meta name="Robots" content="noindex"><meta name="GDPRTESTBOT" content="noai">
    <meta name="otherbot" content="noimageai"><meta name="tdm-reservation" content=" 1 ">
    <meta name="robots"></head><body><meta name="robots" content="nofollow"></body></html>"""
    out, tdm = parse_meta_robots(HtmlResponse("http://x/", body=body), TOKEN, now=NOW)
    assert set(out.rules) == {"noindex", "noai"}
    assert tdm == {"tdm-reservation": "1"}
    assert out.problems == ['<meta name="robots"> without content']


@pytest.mark.parametrize(
    ("values", "prefs", "problems"),
    [
        (["train-ai=n, search=y"], {"train-ai": "n", "search": "y"}, 0),
        (['train-ai=y, train-ai, search=n, search="n"'], {}, 2),  # the draft's all-unknown example
        (["train-ai=n", "train-ai=y"], {"train-ai": "y"}, 0),  # lines joined; last wins
        (["Train-AI=n"], {}, 1),
        (["train-ai=n,,"], {}, 1),
        (["train-ai=?1"], {}, 1),
        (["train-ai=n;q=2;x"], {"train-ai": "n"}, 0),
        (["foo=n, bots=n, train-genai=n, ai-use=n"], {"train-genai": "n", "ai-use": "n"}, 0),
        (["", "  "], {}, 0),
        (["train-ai=\u00e9"], {}, 1),
    ],
)
def test_content_usage(values, prefs, problems):
    out = parse_content_usage(values)
    assert out.prefs == prefs
    assert len(out.problems) == problems


@pytest.mark.parametrize(
    ("values", "doubt"),
    [
        (["train-ai=n, search=y"], set()),
        (['train-ai=y, train-ai, search=n, search="n"'], {"train-ai", "search"}),
        (["Train-AI=n"], {"train-ai"}),
        (["train-ai=n,,"], {"train-ai"}),
        (["train-ai=?1"], {"train-ai"}),
        (["train-ai=\u00e9"], {"train-ai"}),
        (["TRAIN-GENAI=n, AI-USE=y"], {"train-genai", "ai-use"}),
        (["bots=n,,"], set()),  # no known key: no purpose to reserve
        (["xtrain-ai=n,,"], set()),
    ],
)
def test_content_usage_malformed_fails_closed_for_its_key(values, doubt):
    assert set(parse_content_usage(values).doubt) == doubt


def test_tdmrep_file_patterns():
    rules, problems = parse_tdmrep_file(b"""[
        {"location": "/a/*.pdf$", "tdm-reservation": 1},
        {"location": "/a/", "tdm-reservation": "0"},
        {"location": "b/*", "tdm-reservation": 2},
        {"location": "/", "tdm-reservation": true},
        {"nolocation": 1}
    ]""")
    assert len(rules) == 4 and len(problems) == 3
    assert match_tdmrep(rules, "http://x/a/x/y.pdf").reservation == 1
    assert match_tdmrep(rules, "http://x/a/x/y.pdf?download=1").reservation == 0  # "$" anchors
    # case-sensitive: falls to "/", whose value (true) is not 0 or 1: reserved, in doubt
    assert match_tdmrep(rules, "http://x/A/y.pdf").location == "/"
    assert (match_tdmrep(rules, "http://x/A/y.pdf").reservation, match_tdmrep(rules, "http://x/A/y.pdf").doubt) == (1, "true")
    assert match_tdmrep(rules, "http://x/b/c").doubt == "2"
    assert match_tdmrep(rules, "http://x/b/c").location == "/b/*"
    assert match_tdmrep(rules[:2], "http://x/c") is None
    # percent-encoded unreserved characters match their plain form; "$" matched verbatim is %24
    assert match_tdmrep(rules, "http://x/%61/y.pdf").reservation == 1
    rules, _ = parse_tdmrep_file(b'[{"location": "/foo-%24", "tdm-reservation": 1}]')
    assert match_tdmrep(rules, "http://x/foo-%24").reservation == 1
    assert match_tdmrep(rules, "http://x/foo-") is None
    for bad in (b"{}", b"not json", b"\xff", b"[" * 100000):
        with pytest.raises((ValueError, RecursionError)):
            parse_tdmrep_file(bad)


def test_meta_prefilter_never_hides_a_meta_tag():
    from scrapy.http import HtmlResponse

    from scrapy_gdpr.optout import parse_meta_robots

    tricky = b'<html><head><script>var s="</head>";</script><META NAME="robots" CONTENT="noindex"></head></html>'
    rules, _ = parse_meta_robots(HtmlResponse("http://a.test/", body=tricky), "GdprTestBot")
    assert "noindex" in rules.rules
    plain = b"<html><head><title>t</title></head><body>no metas</body></html>"
    rules, tdm = parse_meta_robots(HtmlResponse("http://a.test/", body=plain), "GdprTestBot")
    assert rules.rules == {} and tdm == {}


def test_tdmrep_hostile_pattern_is_matched_in_linear_time():
    # with a regular expression, 30 wildcards against a long path backtrack for hours
    location = "/" + "*a" * 30 + "*b$"
    rules, _ = parse_tdmrep_file(json.dumps([{"location": location, "tdm-reservation": 1}]).encode())
    assert match_tdmrep(rules, "http://x/" + "a" * 5000 + "c") is None
    assert match_tdmrep(rules, "http://x/" + "a" * 40 + "b").reservation == 1
