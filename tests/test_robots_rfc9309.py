"""robots.txt parsing and matching to the letter of RFC 9309, case by case.

Each case is (robots.txt, product token, URL, allowed?), in the manner of a
conformance suite; the crawler asks with its product token only (never the whole
User-Agent). Where RFC 9309 leaves a choice, the one that forbids is taken and the
case says so.
"""

from __future__ import annotations

import pytest

from scrapy_gdpr.robots import parse_robots

H = "http://example.test"


def allowed(robots: str | bytes, token: str, url: str) -> bool:
    body = robots.encode("utf-8") if isinstance(robots, str) else robots
    return parse_robots(body, token).can_fetch(url if "://" in url else H + url)


def check(cases: list[tuple[str | bytes, str, str, bool]]) -> None:
    wrong = [(r, t, u, want) for r, t, u, want in cases if allowed(r, t, u) is not want]
    assert not wrong, wrong


# --------------------------------------------------------------------------- groups (2.2.1, 2.2.4)

#: Records that are neither User-agent nor a rule, each between two User-agent lines.
OTHER_RECORDS = [
    "Crawl-delay: 5",
    "Request-rate: 1/10s",
    "Content-Signal: ai-train=no",
    "Content-Usage: train-ai=n",
    "Sitemap: http://example.test/sitemap.xml",
    "Unknown-Directive: whatever",
    "Host: example.test",
    "Clean-param: ref /",
    "no colon at all",
    ":",
    "# a comment",
    "",
]


@pytest.mark.parametrize("record", OTHER_RECORDS)
def test_other_records_do_not_end_the_user_agent_list(record):
    # RFC 9309 2.2.4: other records must not interfere with the grouping. Both
    # User-agent lines open one group, so "Disallow: /" applies to mybot too.
    robots = f"User-agent: mybot\n{record}\nUser-agent: *\nDisallow: /\n"
    assert not allowed(robots, "mybot", "/page.html")
    assert not allowed(robots, "otherbot", "/page.html")


@pytest.mark.parametrize("record", OTHER_RECORDS)
def test_other_records_inside_a_group_keep_its_rules(record):
    robots = f"User-agent: mybot\nDisallow: /a/\n{record}\nDisallow: /b/\n\nUser-agent: *\nDisallow: /\n"
    check([
        (robots, "mybot", "/a/x", False),
        (robots, "mybot", "/b/x", False),
        (robots, "mybot", "/c/x", True),
        (robots, "otherbot", "/c/x", False),
    ])


def test_the_issue_case_keeps_the_crawl_delay_of_the_group():
    rules = parse_robots(b"User-agent: mybot\nCrawl-delay: 5\nUser-agent: *\nDisallow: /\n", "mybot")
    assert rules.group == "mybot"
    assert not rules.can_fetch(H + "/")
    assert rules.crawl_delay == 5


def test_groups_in_the_manner_of_the_reference_suite():
    robots = (
        "allow: /foo/bar/\n"
        "\n"
        "user-agent: FooBot\n"
        "disallow: /\n"
        "allow: /x/\n"
        "user-agent: BarBot\n"
        "disallow: /\n"
        "allow: /y/\n"
        "\n"
        "\n"
        "allow: /w/\n"
        "user-agent: BazBot\n"
        "\n"
        "user-agent: FooBot\n"
        "allow: /z/\n"
        "disallow: /\n"
    )
    check([
        (robots, "FooBot", "/x/b", True),
        (robots, "FooBot", "/z/d", True),  # the second FooBot group is merged with the first
        (robots, "FooBot", "/y/c", False),
        (robots, "BarBot", "/y/c", True),
        (robots, "BarBot", "/w/a", True),  # blank lines do not end a group
        (robots, "BarBot", "/z/d", False),
        (robots, "BazBot", "/z/d", True),  # BazBot shares the last group with FooBot
        # rules before the first User-agent line belong to no group
        (robots, "FooBot", "/foo/bar/", False),
        (robots, "BarBot", "/foo/bar/", False),
        (robots, "BazBot", "/foo/bar/", False),
    ])


def test_a_rule_line_ends_the_user_agent_list():
    check([
        # an empty Disallow is still a rule line: the next User-agent starts a new group
        ("User-agent: a\nDisallow:\nUser-agent: b\nDisallow: /\n", "a", "/x", True),
        ("User-agent: a\nDisallow:\nUser-agent: b\nDisallow: /\n", "b", "/x", False),
        ("User-agent: a\nAllow: /x\nUser-agent: b\nDisallow: /\n", "a", "/y", True),
        # a Crawl-delay after the rules stays with that group
        ("User-agent: a\nDisallow: /x\nCrawl-delay: 3\nUser-agent: b\nDisallow: /\n", "a", "/y", True),
    ])


def test_duplicate_groups_are_merged():
    robots = (
        "User-agent: a\nDisallow: /x\n\n"
        "User-agent: b\nDisallow: /\n\n"
        "User-agent: A\nDisallow: /y\n"
    )
    check([
        (robots, "a", "/x", False),
        (robots, "a", "/y", False),
        (robots, "a", "/z", True),
        (robots, "b", "/z", False),
    ])
    star = "User-agent: *\nDisallow: /x\n\nUser-agent: other\nDisallow: /\n\nUser-agent: *\nDisallow: /y\n"
    check([(star, "mine", "/x", False), (star, "mine", "/y", False), (star, "mine", "/z", True)])


def test_star_group_only_without_a_group_of_our_own():
    check([
        ("User-agent: *\nDisallow: /\nUser-agent: mybot\nAllow: /\n", "mybot", "/x", True),
        ("User-agent: *\nDisallow: /x/\nUser-agent: mybot\nDisallow: /y/\n", "mybot", "/x/page", True),
        ("User-agent: *\nDisallow: /x/\nUser-agent: mybot\nDisallow: /y/\n", "mybot", "/y/page", False),
        ("User-agent: *\nAllow: /\nUser-agent: mybot\nDisallow: /\n", "mybot", "/x", False),
        ("User-agent: *\nAllow: /\nUser-agent: mybot\nDisallow: /\n", "otherbot", "/x", True),
        # our own group with no rules: nothing is disallowed to us
        ("User-agent: *\nDisallow: /\n\nUser-agent: mybot\nDisallow:\n", "mybot", "/x", True),
        # no group for us and none for "*": no rules
        ("User-agent: a\nDisallow: /\nUser-agent: b\nDisallow: /\n", "mybot", "/x", True),
        ("", "mybot", "/x", True),
    ])


def test_user_agent_matching():
    check([
        # the product token is matched without regard to case, on both sides
        ("User-agent: MYBOT\nDisallow: /\n", "mybot", "/x", False),
        ("User-agent: mybot\nDisallow: /\n", "MyBot", "/x", False),
        ("User-Agent: FoO bAr\nAllow: /x/\nDisallow: /\n", "foo", "/x/y", True),
        ("User-Agent: FoO bAr\nAllow: /x/\nDisallow: /\n", "foo", "/a/b", False),
        # the token ends at the first character outside [a-zA-Z_-]
        ("User-agent: mybot/2.1\nDisallow: /\n", "mybot", "/x", False),
        ("User-agent: mybot (+http://example.test/bot)\nDisallow: /\n", "mybot", "/x", False),
        ("User-agent: my_bot-News\nDisallow: /\n", "my_bot-News", "/x", False),
        # a longer or shorter token is another crawler
        ("User-agent: mybot-news\nDisallow: /\n", "mybot", "/x", True),
        ("User-agent: mybo\nDisallow: /\n", "mybot", "/x", True),
        ("User-agent: *mybot\nDisallow: /\n", "mybot", "/x", True),
        ("User-agent: Mozilla/5.0 (compatible; mybot/1.0)\nDisallow: /\n", "mybot", "/x", True),
        # "*" with trailing text or a comment is still "*"
        ("User-agent: * # everyone\nDisallow: /\n", "mybot", "/x", False),
        ("User-agent:*\nDisallow: /\n", "mybot", "/x", False),
        # an empty user-agent value names no crawler but still joins the list
        ("User-agent:\nUser-agent: mybot\nDisallow: /\n", "mybot", "/x", False),
        # several agents in one group
        ("User-agent: a\nUser-agent: mybot\nUser-agent: b\nDisallow: /x\n", "mybot", "/x", False),
    ])


# --------------------------------------------------------------------------- precedence (2.2.2)


def test_longest_match_wins_and_allow_wins_ties():
    check([
        ("User-agent: *\nDisallow: /x/page.html\nAllow: /x/\n", "a", "/x/page.html", False),
        ("User-agent: *\nAllow: /x/page.html\nDisallow: /x/\n", "a", "/x/page.html", True),
        ("User-agent: *\nAllow: /x/page.html\nDisallow: /x/\n", "a", "/x/", False),
        ("User-agent: *\nDisallow: /x\nAllow: /x/\n", "a", "/x", False),
        ("User-agent: *\nDisallow: /x\nAllow: /x/\n", "a", "/x/", True),
        # equally long Allow and Disallow: Allow, whatever the order
        ("User-agent: *\nDisallow: /x/page.html\nAllow: /x/page.html\n", "a", "/x/page.html", True),
        ("User-agent: *\nAllow: /x/page.html\nDisallow: /x/page.html\n", "a", "/x/page.html", True),
        ("User-agent: *\nDisallow: /\nAllow: /\n", "a", "/x", True),
        ("User-agent: *\nAllow: /folder\nDisallow: /folder\n", "a", "/folder/page", True),
        ("User-agent: *\nAllow: /p\nDisallow: /\n", "a", "/page", True),
        # length counts the pattern's octets, wildcards included
        ("User-agent: *\nAllow: /page\nDisallow: /*.html\n", "a", "/page.html", False),
        ("User-agent: *\nAllow: /page\nDisallow: /*.html\n", "a", "/page", True),
        ("User-agent: *\nAllow: /x/page.\nDisallow: /*.html\n", "a", "/x/page.html", True),
        ("User-agent: *\nAllow: /x/page.\nDisallow: /*.html\n", "a", "/x/y.html", False),
        ("User-agent: *\nAllow: /page\nDisallow: /*.htm\n", "a", "/page.htm", False),
        # the order of lines does not matter
        ("User-agent: *\nAllow: /a/b/c\nDisallow: /a/b\nAllow: /a\nDisallow: /\n", "a", "/a/b/c/d", True),
        ("User-agent: *\nAllow: /a/b/c\nDisallow: /a/b\nAllow: /a\nDisallow: /\n", "a", "/a/b/x", False),
        ("User-agent: *\nAllow: /a/b/c\nDisallow: /a/b\nAllow: /a\nDisallow: /\n", "a", "/a/x", True),
        ("User-agent: *\nAllow: /a/b/c\nDisallow: /a/b\nAllow: /a\nDisallow: /\n", "a", "/b", False),
        # paths are case-sensitive
        ("User-agent: *\nDisallow: /x/\n", "a", "/x/y", False),
        ("User-agent: *\nDisallow: /X/\n", "a", "/x/y", True),
        # an empty rule is no rule
        ("User-agent: *\nDisallow:\n", "a", "/anything", True),
        ("User-agent: *\nDisallow: \nAllow: \n", "a", "/x/page.html", True),
        ("User-agent: *\nDisallow: /\nAllow:\n", "a", "/x", False),
    ])


def test_robots_txt_itself_is_always_allowed():
    check([
        ("User-agent: *\nDisallow: /\n", "a", "/robots.txt", True),
        ("User-agent: *\nDisallow: /robots.txt\n", "a", "/robots.txt", True),
        ("User-agent: *\nDisallow: /\n", "a", "/robots.txt.bak", False),
        ("User-agent: *\nDisallow: /\n", "a", "/sub/robots.txt", False),
    ])


# --------------------------------------------------------------------------- special characters (2.2.3)


def test_wildcards_and_end_anchor():
    fish = "User-agent: *\nDisallow: /\nAllow: /fish\n"
    fish_star = "User-agent: *\nDisallow: /\nAllow: /fish*\n"
    fish_dir = "User-agent: *\nDisallow: /\nAllow: /fish/\n"
    php = "User-agent: *\nDisallow: /\nAllow: /*.php\n"
    php_end = "User-agent: *\nDisallow: /\nAllow: /*.php$\n"
    fish_php = "User-agent: *\nDisallow: /\nAllow: /fish*.php\n"
    cases: list[tuple[str | bytes, str, str, bool]] = []
    for robots in (fish, fish_star):  # "/fish*" is the same as "/fish"
        cases += [(robots, "a", u, True) for u in
                  ("/fish", "/fish.html", "/fish/salmon.html", "/fishheads", "/fishheads/yummy.html",
                   "/fish.html?id=anything")]
        cases += [(robots, "a", u, False) for u in ("/bar", "/Fish.asp", "/catfish", "/?id=fish")]
    cases += [(fish_dir, "a", u, True) for u in ("/fish/", "/fish/salmon", "/fish/?salmon", "/fish/?id=x")]
    cases += [(fish_dir, "a", u, False) for u in ("/fish", "/fish.html", "/Fish/Salmon.html")]
    cases += [(php, "a", u, True) for u in
              ("/filename.php", "/folder/filename.php", "/folder/filename.php?parameters",
               "//folder/any.php.file.html", "/filename.php/", "/index?f=filename.php/")]
    cases += [(php, "a", u, False) for u in ("/bar", "/php/", "/index?php", "/windows.PHP")]
    cases += [(php_end, "a", u, True) for u in ("/filename.php", "/folder/filename.php")]
    cases += [(php_end, "a", u, False) for u in
              ("/filename.php?parameters", "/filename.php/", "/filename.php5", "/php/", "/filename?php",
               "/aaaphpaaa", "//windows.PHP")]
    cases += [(fish_php, "a", "/fish.php", True), (fish_php, "a", "/fishheads/catfish.php?parameters", True),
              (fish_php, "a", "/Fish.PHP", False)]
    cases += [
        ("User-agent: *\nAllow: /$\nDisallow: /\n", "a", "/", True),
        ("User-agent: *\nAllow: /$\nDisallow: /\n", "a", "/page.html", False),
        ("User-agent: *\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n", "a", "/foo/bar/quz", False),
        ("User-agent: *\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n", "a", "/foo/quz", True),
        ("User-agent: *\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n", "a", "/foo/bar", False),
        ("User-agent: *\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n", "a", "/foo/bar/qux", True),
        ("User-agent: *\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n", "a", "/foo/bar/", True),
        # "$" anywhere but at the end is an ordinary character
        ("User-agent: *\nDisallow: /a$b\n", "a", "/a$b/c", False),
        ("User-agent: *\nDisallow: /a$b\n", "a", "/a", True),
        # "*" matches the empty string too, and runs of "*" are one
        ("User-agent: *\nDisallow: /a*b\n", "a", "/ab", False),
        ("User-agent: *\nDisallow: /a**b\n", "a", "/axxb", False),
        ("User-agent: *\nDisallow: /*\n", "a", "/", False),
        ("User-agent: *\nDisallow: *\n", "a", "/anything", False),
        ("User-agent: *\nDisallow: /*?\n", "a", "/page?x=1", False),
        ("User-agent: *\nDisallow: /*?\n", "a", "/page", True),
        ("User-agent: *\nDisallow: /*.gif$\n", "a", "/img/a.gif", False),
        ("User-agent: *\nDisallow: /*.gif$\n", "a", "/img/a.gif?x=1", True),
        ("User-agent: *\nDisallow: /a*b$\n", "a", "/a-b-b", False),
        ("User-agent: *\nDisallow: /a*b$\n", "a", "/a-b-c", True),
        # "#" starts a comment, also inside a value
        ("User-agent: *\n# Disallow: /\nDisallow: /foo/quz#qux\nAllow: /\n", "a", "/foo/bar", True),
        ("User-agent: *\n# Disallow: /\nDisallow: /foo/quz#qux\nAllow: /\n", "a", "/foo/quz", False),
        # the query is part of what is matched; the fragment is not
        ("User-agent: *\nDisallow: /\nAllow: /foo/bar?qux=taz&baz=http://foo.bar?tar&par\n", "a",
         "/foo/bar?qux=taz&baz=http://foo.bar?tar&par", True),
        ("User-agent: *\nDisallow: /page#x\n", "a", "/page-two", False),
        ("User-agent: *\nDisallow: /page\n", "a", "/page#top", False),
    ]
    check(cases)


def test_pathological_patterns_finish():
    # many wildcards against a long path: linear matching, no regex backtracking
    robots = "User-agent: *\nDisallow: /" + "*a" * 2000 + "*b$\n"
    assert allowed(robots, "a", "/" + "a" * 20000 + "c")
    assert not allowed(robots, "a", "/" + "a" * 2000 + "b")


# --------------------------------------------------------------------------- encoding (2.2.2)


def test_percent_encoding_and_raw_non_ascii():
    check([
        # a raw non-ASCII path in robots.txt is compared percent-encoded (UTF-8)
        ("User-agent: *\nDisallow: /\nAllow: /foo/bar/ツ\n", "a", "/foo/bar/%E3%83%84", True),
        ("User-agent: *\nDisallow: /\nAllow: /foo/bar/ツ\n", "a", "/foo/bar/%e3%83%84", True),
        ("User-agent: *\nDisallow: /\nAllow: /foo/bar/%E3%83%84\n", "a", "/foo/bar/%E3%83%84", True),
        ("User-agent: *\nDisallow: /fööbar/\n", "a", "/f%C3%B6%C3%B6bar/x", False),
        ("User-agent: *\nDisallow: /%C3%A9t%C3%A9\n", "a", "/%c3%a9t%c3%a9/x", False),
        ("User-agent: *\nDisallow: /été\n", "a", "/ete", True),
        ("User-agent: *\nDisallow: /Ünïcödé/\n", "a", "/Ünïcödé/page", False),  # a URL given raw too
        ("User-agent: *\nDisallow: /Ünïcödé/\n", "a", "/unicode/page", True),
        # hex digits in either case
        ("User-agent: *\nDisallow: /foo/bar%2Fbaz\n", "a", "/foo/bar%2fbaz", False),
        ("User-agent: *\nDisallow: /a%3cd.html\n", "a", "/a%3Cd.html", False),
        # an Allow applies to the spelling it gives
        ("User-agent: *\nDisallow: /\nAllow: /foo/bar/%62%61%7A\n", "a", "/foo/bar/%62%61%7A", True),
        ("User-agent: *\nDisallow: /\nAllow: /foo/bar/%62%61%7A\n", "a", "/foo/bar/baz", False),
        # a Disallow also to the decoded spelling, both ways (in doubt, forbid)
        ("User-agent: *\nDisallow: /%7Ejoe/\n", "a", "/~joe/index.html", False),
        ("User-agent: *\nDisallow: /~joe/\n", "a", "/%7Ejoe/index.html", False),
        ("User-agent: *\nDisallow: /~joe/\n", "a", "/%7ejoe/index.html", False),
        ("User-agent: *\nDisallow: /private/\n", "a", "/priv%61te/x", False),
        ("User-agent: *\nDisallow: /admin/\n", "a", "/admin%2Fx.html", False),
        ("User-agent: *\nDisallow: /admin/\n", "a", "/admin%252Fx.html", True),  # an escaped "%" stays one
        ("User-agent: *\nDisallow: /a b\n", "a", "/a%20b", False),
        ("User-agent: *\nDisallow: /100%\n", "a", "/100%25", False),
        # a literal "*" written as %2A is not a wildcard in the path
        ("User-agent: *\nDisallow: /a%2Ab\n", "a", "/axxb", True),
        ("User-agent: *\nDisallow: /a%2Ab\n", "a", "/a%2Ab", False),
    ])


def test_paths_that_are_not_utf8():
    # Latin-1 octets in robots.txt are compared as the octets they are
    robots = b"User-agent: *\nDisallow: /caf\xe9/\n"
    assert not allowed(robots, "a", "/caf%E9/menu")
    assert allowed(robots, "a", "/caf%C3%A9/menu")


# --------------------------------------------------------------------------- line syntax (2.1, 2.2)


def test_line_syntax():
    check([
        ("user-agent: FooBot\ndisallow: /\n", "FooBot", "/x/y", False),
        ("foo: FooBot\nbar: /\n", "FooBot", "/x/y", True),
        # a missing colon is read as if it were there
        ("user-agent FooBot\ndisallow /\n", "FooBot", "/x/y", False),
        ("User-agent: FooBot\nDisallow /x/\n", "FooBot", "/x/y", False),
        ("User agent FooBot\nDissallow /x/\n", "FooBot", "/x/y", False),  # misspelt and no colon
        ("User-agent: FooBot\nDisallow: /\nAllow /x/\n", "FooBot", "/x/y", True),
        # names in any case, with spaces and tabs around the parts
        ("USER-AGENT: FooBot\nALLOW: /x/\nDISALLOW: /\n", "FooBot", "/x/y", True),
        ("uSeR-aGeNt: FooBot\nAlLoW: /x/\ndIsAlLoW: /\n", "FooBot", "/a/b", False),
        ("  User-agent  :  FooBot  \n\tDisallow\t:\t/x/\t\n", "FooBot", "/x/y", False),
        ("User-agent:FooBot\nDisallow:/x/\n", "FooBot", "/x/y", False),
        # common misspellings of the names
        ("useragent: FooBot\ndissallow: /x/\n", "FooBot", "/x/y", False),
        ("user agent: FooBot\ndisalow: /x/\n", "FooBot", "/x/y", False),
        # a path without its leading "/" is still a Disallow (in doubt, forbid) ...
        ("User-agent: *\nDisallow: private\n", "a", "/private/x", False),
        # ... but never widens an Allow
        ("User-agent: *\nDisallow: /\nAllow: public\n", "a", "/public/x", False),
    ])


def test_other_records_without_a_colon():
    rules = parse_robots(b"User-agent: FooBot\nCrawl delay 3\nRequest-rate 1/10s\nContent-Signal ai-train=no\n", "FooBot")
    assert rules.crawl_delay == 3 and rules.request_rate == (1, 10)
    assert rules.reserved(H + "/x", ["ai-train"])[0] == "ai-train"


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_line_endings(eol):
    robots = eol.join(["User-Agent: foo", "Allow: /some/path", "User-Agent: bar", "", "", "Disallow: /"]) + eol
    check([
        (robots, "foo", "/some/path", True),
        (robots, "foo", "/other", True),
        (robots, "bar", "/other", False),
        (robots.rstrip("\r\n"), "bar", "/other", False),  # no final line end
    ])
    rules = parse_robots(robots.encode(), "bar")
    assert rules.explain(H + "/x") == "robots.txt line 6 'Disallow: /' (group User-agent: bar)"


def test_mixed_line_endings_and_unicode_separators():
    robots = "User-agent: a\nDisallow: /x\r\nUser-agent: b\rDisallow: /y\n"
    check([(robots, "a", "/x", False), (robots, "a", "/y", True), (robots, "b", "/y", False)])
    # only CR and LF end a line: a Unicode line separator inside a value does not
    # start a new line (here it would make "Allow: /" a rule of its own)
    for sep in ("\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"):
        robots = f"User-agent: *\nDisallow: /\nAllow: /public{sep}Allow: /\n"
        assert not allowed(robots, "a", "/secret"), repr(sep)


def test_byte_order_mark():
    body = b"User-Agent: foo\nDisallow: /x\n"
    check([
        (b"\xef\xbb\xbf" + body, "foo", "/x", False),
        (b"\xef\xbb" + body, "foo", "/x", False),  # a cut mark
        (b"\xef" + body, "foo", "/x", False),
        (b"\xef\x11\xbf" + body, "foo", "/x", True),  # not a mark: the first line is unreadable
    ])
    # a mark inside the file spoils its line: an Allow there is dropped, a Disallow kept
    check([
        (b"User-Agent: foo\nDisallow: /\n\xef\xbb\xbfAllow: /x\n", "foo", "/x", False),
        (b"User-Agent: foo\n\xef\xbb\xbfDisallow: /x\n", "foo", "/x", False),
    ])


def test_long_lines_are_read_whole():
    pattern = "/x/" + "a" * 20000
    robots = f"User-agent: *\nDisallow: {pattern}/qux\n"
    assert allowed(robots, "a", "/fux")
    assert allowed(robots, "a", pattern + "/fux")  # not cut at some line length
    assert not allowed(robots, "a", pattern + "/qux")
    robots = f"User-agent: *\nDisallow: /\nAllow: {pattern}/qux\n"
    assert allowed(robots, "a", pattern + "/qux")
    assert not allowed(robots, "a", pattern + "/fux")  # a long Allow does not widen


def test_at_least_500_kib_are_parsed():
    filler = "".join(f"Disallow: /filler/{i:06d}/\n" for i in range(19650))
    assert len(filler) > 500 * 1024 - 2000
    body = f"User-agent: *\n{filler}Disallow: /last/\n".encode()
    assert len(body) < 500 * 1024  # the last rule lies just within 500 KiB
    rules = parse_robots(body, "a")
    assert not rules.truncated
    assert not rules.can_fetch(H + "/last/x")
    assert not rules.can_fetch(H + "/filler/019649/x")
    assert rules.can_fetch(H + "/other")
    # the policy's limit (at least 500 KiB) ends what is read, at a whole line
    over = body + b"Allow: /last/\n"
    cut = parse_robots(over, "a", max_size=len(body) + 5)
    assert cut.truncated and not cut.can_fetch(H + "/last/x")


# --------------------------------------------------------------------------- other records within their group


def test_crawl_delay_and_request_rate_of_the_right_group():
    robots = (
        "User-agent: a\nCrawl-delay: 1\nDisallow: /x\n\n"
        "User-agent: b\nUser-agent: c\nRequest-rate: 1/20s\nCrawl-delay: 4\nDisallow: /y\n\n"
        "User-agent: *\nCrawl-delay: 9\nRequest-rate: 2/1m\nDisallow:\n"
    )
    a, b, other = (parse_robots(robots.encode(), t) for t in ("a", "C", "z"))
    assert (a.crawl_delay, a.request_rate) == (1, None)
    assert (b.crawl_delay, b.request_rate) == (4, (1, 20))
    assert (other.crawl_delay, other.request_rate) == (9, (2, 60))
    # malformed values are ignored, not read as zero
    for bad in ("soon", "-1", "nan", "inf", ""):
        assert parse_robots(f"User-agent: *\nCrawl-delay: {bad}\n".encode(), "a").crawl_delay is None
    for bad in ("fast", "0/10", "1/0", "1/x", "/10"):
        assert parse_robots(f"User-agent: *\nRequest-rate: {bad}\n".encode(), "a").request_rate is None


def test_content_signals_of_the_right_group():
    robots = (
        "User-agent: other\nContent-Signal: ai-train=no\nContent-Usage: train-ai=n\nDisallow: /x\n\n"
        "User-agent: *\nContent-Signal: search=yes\nAllow: /\n"
    )
    mine = parse_robots(robots.encode(), "mybot")
    assert [s.prefs for s in mine.signals] == [{"search": True}]
    assert mine.reserved(H + "/page", ["ai-train"]) is None
    theirs = parse_robots(robots.encode(), "other")
    assert theirs.reserved(H + "/page", ["ai-train"])[0] == "ai-train"
    # a signal between two User-agent lines belongs to the group of both
    shared = "User-agent: mybot\nContent-Signal: ai-train=no\nUser-agent: *\nDisallow: /private/\n"
    for token in ("mybot", "someone"):
        rules = parse_robots(shared.encode(), token)
        assert rules.reserved(H + "/page", ["ai-train"])[0] == "ai-train"
        assert not rules.can_fetch(H + "/private/x")
    usage = "User-agent: mybot\nContent-Usage: /images/ train-ai=n\nUser-agent: *\nDisallow: /private/\n"
    rules = parse_robots(usage.encode(), "mybot")
    assert rules.reserved(H + "/images/a.jpg", ["ai-train"])[0] == "ai-train"
    assert rules.reserved(H + "/text/a.html", ["ai-train"]) is None
    assert not rules.can_fetch(H + "/private/x")


def test_sitemaps_anywhere():
    robots = "Sitemap: http://example.test/a.xml\nUser-agent: x\nSitemap: http://example.test/b.xml\nDisallow: /\n"
    assert parse_robots(robots.encode(), "mine").sitemaps == ["http://example.test/a.xml", "http://example.test/b.xml"]


def test_rules_filed_by_segment_decide_as_a_full_scan_does():
    # the rule set files rules by their first path segment; it must pick exactly the
    # rule a scan of every rule in precedence order picks
    import random

    from scrapy_gdpr.robots import RuleSet, _encode, url_path

    rng = random.Random(9309)
    atoms = ["a", "b", "/", "/", "*", "%61", "%2F", "~", "%7e", "?", "é"]

    def text(n: int) -> str:
        return "/" + "".join(rng.choice(atoms) for _ in range(rng.randrange(n)))

    for _ in range(300):
        rules = [(rng.choice(["Allow", "Disallow"]), text(6) + rng.choice(["", "", "$"])) for _ in range(rng.randrange(1, 12))]
        ruleset = RuleSet(rules)
        for _ in range(20):
            url = "http://h" + text(9).replace("*", "x")
            path = url_path(url)
            raw, decoded = _encode(path, decode=False), _encode(path, decode=True)
            scan = next((r for r in ruleset.rules
                         if r.raw.matches(raw) or (not r.allow and r.decoded.matches(decoded))), None)
            if path == "/robots.txt":
                scan = None
            assert ruleset.decide(url) is scan, (rules, url)


def test_license_line_between_user_agents_does_not_end_the_group():
    from scrapy_gdpr.robots import parse_robots

    rules = parse_robots(b"User-agent: mybot\nLicense: /l.xml\nUser-agent: *\nDisallow: /\n", "mybot")
    assert not rules.can_fetch("http://a.example/x")
    assert rules.licenses == [(2, "/l.xml")]
