"""The machine-readable description of the crawler, published next to its information page.

:func:`crawler_description` turns a policy (and the review data built from it) into
one JSON object: who runs the crawler and how to reach them, the User-Agent, the
robots.txt product tokens with the purposes each one stands for, and every signal
the crawl honours with its policy switch. ``scrapy gdpr-report`` writes it as
``<policy_id>-crawler-info.json`` beside ``<policy_id>-crawler-info.html``, which
links it (``<a rel="alternate" type="application/json">``), so a site
operator's tools can read what a person reads on the page. The format is documented
in ``docs/optout.md`` ("What the crawler publishes about itself").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy_gdpr.policy import Policy

#: The ``format`` member: its name and version. A new version is a change that a reader
#: of the previous one would misread (a member renamed, removed or given another meaning).
FORMAT = "scrapy-gdpr-crawler-description/1"

#: What each honoured signal is, by its policy switch: (carriers, specification).
SIGNAL_SPECS: dict[str, tuple[list[str], str]] = {
    "x_robots_tag": (["X-Robots-Tag header", "Robots-Tag header"],
                     "Google's X-Robots-Tag syntax; draft-illyes-repext robots-tag"),
    "meta_robots": (['<meta name="robots"> and <meta name="<product token>"> in <head>'],
                    "draft-illyes-repext"),
    "tdmrep": (["/.well-known/tdmrep.json", "tdm-reservation header", '<meta name="tdm-reservation">'],
               "W3C TDM Reservation Protocol (TDMRep)"),
    "content_signal": (["robots.txt Content-Signal line", "Content-Signal header"],
                       "Content Signals Policy (contentsignals.org)"),
    "content_usage": (["robots.txt Content-Usage line", "Content-Usage header"],
                      "IETF AI preferences (draft-ietf-aipref-vocab, draft-ietf-aipref-attach)"),
    "image_metadata": (["XMP plus:DataMining in images and documents"],
                       "IPTC Photo Metadata Standard 2023.1 Data Mining (PLUS LDF)"),
    "content_credentials": (["C2PA manifest: cawg.training-mining / c2pa.training-mining assertion"],
                            "C2PA 2.x / CAWG training-and-mining assertion"),
    "payment_required": (["HTTP 402 Payment Required (crawler-price header)"], "RFC 9110 section 15.5.3"),
    "rsl": (["robots.txt License line", 'Link header rel="license" type="application/rsl+xml"',
             '<link rel="license" type="application/rsl+xml">', '<script type="application/rsl+xml"> in a page'],
            "RSL 1.0 (Really Simple Licensing)"),
}


def description_file(policy_id: str) -> str:
    """The file name ``scrapy gdpr-report`` writes the description to."""
    return f"{policy_id}-crawler-info.json"


def crawler_description(policy: Policy, doc: dict[str, Any]) -> dict[str, Any]:
    """The description of the crawler as JSON-serialisable data (``doc``: :func:`review.build_documents`)."""
    main = policy.crawler.product_token
    contact = policy.dpo or policy.controller
    purposes = []
    for p in policy.purposes:
        own = p.product_token if p.product_token and p.product_token.lower() != main.lower() else None
        purposes.append({
            "id": p.id,
            "description": p.description,
            "lawful_basis": p.lawful_basis,
            "product_token": own or main,
            "signal_purposes": list(p.signal_purposes),
            "rsl_usage": p.licence_usage,
        })
    tokens = [{"token": main, "fetches": True, "purposes": [p.id for p in policy.purposes]}]
    tokens.extend({"token": entry["product_token"], "fetches": False, "purposes": [entry["id"]]}
                  for entry in purposes if entry["product_token"] != main)
    signals = []
    for row in doc["opt_out"]:
        carriers, spec = SIGNAL_SPECS.get(row["key"], ([], ""))
        signals.append({"key": row["key"], "name": row["signal"], "honoured": bool(row["honoured"]),
                        "carriers": carriers, "specification": spec, "example": row["example"]})
    return {
        "format": FORMAT,
        "product_token": main,
        "user_agent": policy.crawler.user_agent,
        "information_page": policy.crawler.info_url,
        "operator": {"name": policy.controller.name,
                     **({"url": policy.controller.url} if policy.controller.url else {})},
        "contact": contact.model_dump(mode="json", exclude_none=True, include={"name", "email", "url"}),
        "purposes": purposes,
        "robots_txt": {
            "specification": "RFC 9309",
            "product_tokens": tokens,
            "cache_ttl": str(policy.robots.cache_ttl),
            "unreachable": "a robots.txt that answers 5xx or 429 or cannot be reached disallows the whole site",
        },
        "signals": signals,
        "deny_lists": bool(policy.opt_out.deny_lists),
        "policy_fingerprint": policy.fingerprint,
        "updated": doc["generated_on"],
    }
