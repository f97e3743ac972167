"""The objection list: file format, canonical matching, appended lines, scale."""

from __future__ import annotations

import re
import time

import pytest

from scrapy_gdpr.objections import ObjectionFileError, ObjectionList, append_objection, canonical_url


def test_from_entries_matches_kinds_and_returns_the_entry():
    objections = ObjectionList.from_entries(
        [
            ("url", "https://example.org/people/jane.html"),
            "prefix https://example.org/people/joe/",
            "domain Jane-Doe.example",
            "# a comment",
            "",
        ]
    )
    assert len(objections) == 3
    assert objections.match("https://example.org/people/jane.html") == "url https://example.org/people/jane.html"
    assert objections.match("https://example.org/people/joe/a/b.jpg") == "prefix https://example.org/people/joe/"
    assert objections.match("http://blog.jane-doe.example/x") == "domain jane-doe.example"
    assert objections.match("https://jane-doe.example") == "domain jane-doe.example"
    assert objections.match("https://example.org/people/janet.html") is None
    assert objections.match("https://example.org/people/joe") is None
    assert objections.match("https://notjane-doe.example/") is None
    assert objections.match_host("JANE-DOE.example.") == "domain jane-doe.example"


@pytest.mark.parametrize(
    "variant",
    [
        "https://example.org/people/jane.html",
        "http://example.org/people/jane.html",
        "HTTPS://EXAMPLE.ORG/people/jane.html",
        "https://example.org:443/people/jane.html",
        "http://example.org:80/people/jane.html",
        "https://example.org./people/jane.html",
        "https://example.org/people/%6Aane.html",
        "https://example.org/people/x/../jane.html",
        "https://example.org/people/./jane.html#photo",
    ],
)
def test_canonical_variants_match(variant):
    objections = ObjectionList.from_entries([("url", "https://example.org/people/jane.html")])
    assert objections.match(variant) is not None


def test_query_order_and_ports():
    objections = ObjectionList.from_entries(
        [("url", "https://example.org/p?b=2&a=1"), ("url", "http://example.org:8080/x")]
    )
    assert objections.match("https://example.org/p?a=1&b=2")
    assert objections.match("https://example.org:8080/x")
    assert objections.match("https://example.org/x") is None
    assert objections.match("https://example.org/p?a=1") is None


def test_idn_and_ipv6():
    objections = ObjectionList.from_entries([("domain", "bücher.example"), ("url", "http://[::0:1]:8080/a")])
    assert objections.match("https://www.xn--bcher-kva.example/") == "domain xn--bcher-kva.example"
    assert objections.match("https://shop.bücher.example/a") is not None
    assert objections.match("http://[::1]:8080/a") is not None


def test_fast_path_agrees_with_w3lib():
    import scrapy_gdpr.objections as mod

    urls = [
        "https://Example.org:443/people/jane.html",
        "http://example.org",
        "https://EXAMPLE.org./x",
        "http://ex.org:8080/a~b_c-d.e",
        "http://ex.org/a/./b/../c",
        "http://ex.org/.well-known/x",
        "http://ex.org/p?a=1&b=2#frag",
        "http://ex.org/p?b=2&a=1",
        "http://ex.org/p?a-=1&a=2",
        "http://ex.org/p?a&b=1",
        "http://ex.org/p?",
        "http://ex.org#x",
        "http://[::1]:80/q",
    ]
    fast = [canonical_url(u) for u in urls]
    pattern = mod._PLAIN_URL
    try:
        mod._PLAIN_URL = re.compile(r"(?!)")  # never matches: always the w3lib path
        slow = [canonical_url(u) for u in urls]
    finally:
        mod._PLAIN_URL = pattern
    assert fast == slow


def test_file_missing_is_empty_and_appended_lines_are_read(tmp_path):
    path = tmp_path / "objections.txt"
    objections = ObjectionList.from_file(path)
    assert len(objections) == 0
    assert objections.match("https://example.org/a") is None
    append_objection(path, "url", "https://example.org/a", note="erasure 1")
    assert objections.match("https://example.org/a") == f"url https://example.org/a ({path}:2)"
    append_objection(path, "domain", "example.net")
    assert objections.match("https://www.example.net/") == f"domain example.net ({path}:4)"
    # an incomplete last line (a writer in the middle of it) is left for later
    with path.open("a", encoding="utf-8") as fh:
        fh.write("url https://example.org/b")
    assert objections.match("https://example.org/b") is None
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n")
    assert objections.match("https://example.org/b") is not None


def test_in_memory_entries_survive_a_rewrite(tmp_path):
    path = tmp_path / "objections.txt"
    path.write_text("url https://example.org/a\nurl https://example.org/b\n", encoding="utf-8")
    objections = ObjectionList.from_file(path)
    objections.add("prefix", "https://example.org/people/")
    # replaced by a shorter file (someone removed an entry by hand)
    replacement = tmp_path / "new.txt"
    replacement.write_text("url https://example.org/b\n", encoding="utf-8")
    replacement.replace(path)
    assert objections.match("https://example.org/a") is None
    assert objections.match("https://example.org/b") is not None
    assert objections.match("https://example.org/people/x") == "prefix https://example.org/people/"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("url https://ok.example/\nuri https://typo.example/\n", r":2: expected 'url URL'"),
        ("url not-a-url\n", r":1: 'not-a-url' is not an absolute http\(s\) URL"),
        ("domain https://example.org/\n", r":1: .* is not a domain name"),
        ("url https://a.example/ https://b.example/\n", r":1: expected 'KIND VALUE'"),
        ("prefix\n", r":1: expected"),
    ],
)
def test_malformed_file_fails_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "objections.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ObjectionFileError, match=message):
        ObjectionList.from_file(path)


def test_not_utf8_and_unreadable(tmp_path):
    path = tmp_path / "objections.txt"
    path.write_bytes(b"url https://example.org/\nurl https://example.org/\xff\n")
    with pytest.raises(ObjectionFileError, match=r"objections.txt:2: the line is not UTF-8"):
        ObjectionList.from_file(path)
    folder = tmp_path / "dir.txt"
    folder.mkdir()
    with pytest.raises(ObjectionFileError, match="cannot be read"):
        ObjectionList.from_file(folder)


def test_malformed_appended_line_blocks_lookups_until_fixed(tmp_path):
    path = tmp_path / "objections.txt"
    append_objection(path, "url", "https://example.org/a")
    objections = ObjectionList.from_file(path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("garbage\n")
    with pytest.raises(ObjectionFileError, match=r":3: expected"):
        objections.match("https://example.org/other")
    path.write_text("url https://example.org/a\n", encoding="utf-8")  # fixed (shorter)
    assert objections.match("https://example.org/other") is None
    assert objections.match("https://example.org/a") is not None


@pytest.mark.slow
def test_one_million_entries_load_and_lookups_stay_fast(tmp_path):
    n = 1_000_000
    path = tmp_path / "objections.txt"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            kind = ("url", "prefix", "domain")[i % 3]
            if kind == "domain":
                fh.write(f"domain person-{i}.example\n")
            elif kind == "prefix":
                fh.write(f"prefix https://site-{i % 997}.example/people/{i}/\n")
            else:
                fh.write(f"url https://site-{i % 997}.example/people/{i}.html\n")
    started = time.perf_counter()
    objections = ObjectionList.from_file(path)
    load_seconds = time.perf_counter() - started
    assert len(objections) == n
    assert load_seconds < 120  # loose: about 5 s on a loaded 2-core machine

    probes = [
        ("https://site-3.example/people/3.html", "url"),
        ("http://SITE-4.example:443/people/4/photo.jpg", None),  # port 443 over http is another service
        ("https://site-4.example/people/4/photo.jpg", "prefix"),
        ("https://www.person-999998.example/", "domain"),
        ("https://site-5.example/people/5.html", None),
        ("https://elsewhere.example/a/b/c/d/e/f?q=1", None),
    ]
    for url, kind in probes:
        found = objections.match(url)
        assert (found.split()[0] if found else None) == kind, url
    rounds = 20_000
    started = time.perf_counter()
    for i in range(rounds):
        objections.match(probes[i % len(probes)][0])
    per_lookup = (time.perf_counter() - started) / rounds
    # a linear scan of a million entries takes tens of milliseconds per lookup
    assert per_lookup < 0.002, per_lookup


def test_domain_verdicts_per_host_follow_every_change_of_the_list(tmp_path):
    path = tmp_path / "objections.txt"
    path.write_text("domain other.example\n", encoding="utf-8")
    objections = ObjectionList.from_file(path)
    assert objections.match("https://www.person.example/a") is None  # remembered for the host
    append_objection(path, "domain", "person.example")
    assert objections.match("https://www.person.example/b") == f"domain person.example ({path}:3)"
    objections.add("domain", "added.example")
    assert objections.match_host("x.added.example") == "domain added.example"
    # the entry removed by hand (the file replaced): the host is no longer covered
    replacement = tmp_path / "new.txt"
    replacement.write_text("domain other.example\n", encoding="utf-8")
    replacement.replace(path)
    assert objections.match("https://www.person.example/c") is None
    assert objections.match_host("x.added.example") == "domain added.example"  # in-memory entries stay


def test_domain_verdicts_per_host_are_bounded(tmp_path, monkeypatch):
    from scrapy_gdpr import objections as module

    monkeypatch.setattr(module, "HOST_VERDICTS_SIZE", 5)
    objections = ObjectionList.from_entries(["domain person.example"])
    for i in range(20):
        assert objections.match(f"https://h{i}.example/") is None
        assert objections.match(f"https://h{i}.person.example/") == "domain person.example"
    assert len(objections._host_verdicts) <= 5


def test_a_match_quotes_the_entry_with_its_own_scheme(tmp_path):
    """http and https URLs share a key; the detail must still quote what the file says."""
    path = tmp_path / "objections.txt"
    path.write_text(
        "url http://example.org/a\n"  # the fast path of the reader
        "prefix http://example.org/people/\n"
        "url https://example.org/b\n"
        "url HTTP://Example.org/c?b=2&a=1\n"  # the slow path (canonicalised)
        "prefix http://example.org/%7Ejane/\n",
        encoding="utf-8",
    )
    objections = ObjectionList.from_file(path)
    assert objections.match("https://example.org/a") == f"url http://example.org/a ({path}:1)"
    assert objections.match("https://example.org/people/x") == f"prefix http://example.org/people/ ({path}:2)"
    assert objections.match("http://example.org/b") == f"url https://example.org/b ({path}:3)"
    assert objections.match("https://example.org/c?a=1&b=2") == f"url http://example.org/c?a=1&b=2 ({path}:4)"
    assert objections.match("https://example.org/~jane/x") == f"prefix http://example.org/~jane/ ({path}:5)"
    memory = ObjectionList.from_entries([("url", "http://example.org/m"), "prefix http://example.org/n/"])
    memory.add("url", "http://example.org/o")
    assert memory.match("https://example.org/m") == "url http://example.org/m"
    assert memory.match("https://example.org/n/1") == "prefix http://example.org/n/"
    assert memory.match("https://example.org/o") == "url http://example.org/o"


def test_spellings_a_server_decodes_are_covered():
    """An objection is a deny rule: /people%2Fjane/ must not slip past prefix /people/jane/."""
    objections = ObjectionList.from_entries(
        ["prefix https://example.org/people/jane/", "url https://example.org/a/b.html", "prefix https://example.org/über/"]
    )
    for url in (
        "https://example.org/people%2Fjane/photo.jpg",
        "https://example.org/people%2fjane/photo.jpg",
        "https://example.org/people%252Fjane/photo.jpg",  # double encoding
        "https://example.org/people;x=1/jane/photo.jpg",
        "https://example.org/x/..%2Fpeople/jane/photo.jpg",
        "https://example.org//people/jane/photo.jpg",
    ):
        assert objections.match(url) == "prefix https://example.org/people/jane/", url
    assert objections.match("https://example.org/a%2Fb.html") == "url https://example.org/a/b.html"
    assert objections.match("https://example.org/%C3%BCber%2Fx.jpg") == "prefix https://example.org/%C3%BCber/"
    assert objections.match("https://example.org/people/janet/x.jpg") is None
    assert objections.match("https://example.org/people%2Fjoe/x.jpg") is None
    with pytest.raises(ValueError, match="cannot be normalised"):
        objections.match("https://example.org/people%25252525252Fjane/x.jpg")
