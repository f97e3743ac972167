"""The documents a privacy officer and the public read, built from a policy file.

:func:`build_documents` turns a valid :class:`~scrapy_gdpr.policy.Policy` (and the
lint findings) into plain, JSON-serialisable data: the review document (the Art. 30
record in plain language, each domain's terms review, what happens to pages, images
and faces, and a checklist of open items) and the public crawler information page
(the Art. 14 notice). :func:`render_review_html`, :func:`render_review_markdown` and
:func:`render_notice_html` turn that data into self-contained documents (no external
resources; print-friendly).
"""

from __future__ import annotations

import ipaddress
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from scrapy_gdpr import __version__
from scrapy_gdpr.consoles import console_enabled
from scrapy_gdpr.documents.description import crawler_description, description_file
from scrapy_gdpr.documents.review_html import render_notice_html, render_review_html
from scrapy_gdpr.documents.review_markdown import render_review_markdown
from scrapy_gdpr.documents.vocabulary import (
    FACE_ACTIONS,
    LAWFUL_BASES,
    OPT_OUT_SIGNALS,
    RECIPIENT_ROLES,
    SAFEGUARDS,
    SENSITIVITY,
    SIGNAL_PURPOSES,
    VERDICTS,
    _duration_words,
    _public_words,
    _seconds_words,
    _words,
    margin_words,
)

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

    from scrapy_gdpr.policy import Contact, Finding, Policy

__all__ = [
    "build_documents",
    "console_enabled",
    "console_states",
    "render_notice_html",
    "render_review_html",
    "render_review_markdown",
]

#: Reviews due within this many days are listed in the checklist.
REVIEW_HORIZON_DAYS = 90



ART9_CONDITIONS: dict[str, tuple[str, str]] = {
    "explicit_consent": ("Art. 9(2)(a)", "explicit consent of the data subjects"),
    "employment_and_social_security": ("Art. 9(2)(b)", "employment, social security and social protection law"),
    "vital_interests": ("Art. 9(2)(c)", "vital interests of a person unable to give consent"),
    "not_for_profit_body": ("Art. 9(2)(d)", "activities of a not-for-profit body with members"),
    "manifestly_made_public": ("Art. 9(2)(e)", "data manifestly made public by the data subject"),
    "legal_claims": ("Art. 9(2)(f)", "establishment, exercise or defence of legal claims"),
    "substantial_public_interest": ("Art. 9(2)(g)", "substantial public interest on the basis of law"),
    "health_or_social_care": ("Art. 9(2)(h)", "health or social care"),
    "public_health": ("Art. 9(2)(i)", "public interest in public health"),
    "archiving_research_statistics": (
        "Art. 9(2)(j)",
        "archiving in the public interest, scientific or historical research, or statistics",
    ),
}


def _contact(contact: Contact | None) -> dict[str, Any] | None:
    if contact is None:
        return None
    return contact.model_dump(mode="json", exclude_none=True)




# --------------------------------------------------------------------------- consoles

#: Scrapy's consoles that open a way into a running crawl: (setting, extension, name, what it does).
CONSOLES: list[tuple[str, str, str, str]] = [
    ("TELNETCONSOLE_ENABLED", "scrapy.extensions.telnet.TelnetConsole", "telnet console",
     ("a Python prompt inside the running crawl (user name and password from TELNETCONSOLE_USERNAME "
     "and TELNETCONSOLE_PASSWORD, or a password printed in the crawl log)")),
    ("REMOTE_CONTROL_ENABLED", "scrapy.extensions.remote_control.RemoteControl", "remote-control server",
     ("an HTTP server that runs Python code sent to it inside the running crawl (token in a job file "
     "in the user's profile folder)")),
]


def console_states(settings: BaseSettings | None) -> list[dict[str, Any]]:
    """Each of Scrapy's consoles, whether a crawl under the add-on runs it, and a sentence saying so."""
    from scrapy.settings import Settings

    settings = settings if settings is not None else Settings()
    out = []
    for setting, _, name, what in CONSOLES:
        enabled = console_enabled(settings, setting)
        if enabled:
            if setting == "TELNETCONSOLE_ENABLED":
                ports = settings.getlist("TELNETCONSOLE_PORT") or ["?"]
                where = (f" It listens on {settings.get('TELNETCONSOLE_HOST') or '127.0.0.1'}, port "
                         + (f"{ports[0]}" if len(ports) == 1 else f"{ports[0]} to {ports[-1]}") + ".")
            else:
                where = " It listens on a random port of this machine."
            words = (f"Scrapy's {name} is switched ON by the project's settings ({setting}): {what}. "
                     f"While a crawl runs, whoever can reach it can read and change everything the crawl holds.{where}")
        else:
            words = (f"Scrapy's {name} is switched off ({setting} is not switched on by the project's settings, "
                     "so the add-on switches it off).")
        out.append({"setting": setting, "name": name, "enabled": enabled, "words": words})
    return out


# --------------------------------------------------------------------------- building


def build_documents(
    policy: Policy, findings: list[Finding], *, today: date | None = None, settings: BaseSettings | None = None
) -> dict[str, Any]:
    """The content of both documents, as JSON-serialisable data.

    ``settings`` are the project's settings (what ``scrapy gdpr-report`` runs with):
    the documents state what a crawl does with them, for example whether Scrapy's
    consoles run (:func:`console_states`). Without them, Scrapy's defaults are used.
    """
    generated = date.today()
    today = today or generated
    file = str(policy.path) if policy.path else ""
    doc: dict[str, Any] = {
        "generator": f"scrapy-gdpr {__version__}",
        "generated_on": generated.isoformat(),
        # dates are checked as of this day (``--today``), normally the day it was generated
        "checked_as_of": today.isoformat(),
        "policy": {
            "id": policy.policy_id,
            "title": policy.title or policy.policy_id,
            "file": file,
            "fingerprint": policy.fingerprint,
            "version": policy.version,
        },
    }
    doc["consoles"] = console_states(settings)
    purge_on_open = settings.getbool("GDPR_PURGE_ON_OPEN", True) if settings is not None else True
    doc["record"] = _record(policy, doc["consoles"], purge_on_open)
    doc["domains"] = [_domain(policy, i) for i in range(len(policy.domains))]
    doc["handling"] = _handling(policy)
    doc["opt_out"] = [
        {"key": key, "signal": name, "example": example, "honoured": getattr(policy.opt_out, key)}
        for key, name, example in OPT_OUT_SIGNALS
    ]
    doc["deny_lists"] = list(policy.opt_out.deny_lists)
    doc["rsl_licences"] = [
        {"document": h.document, "usage": list(h.usage), "reference": h.reference,
         "obtained_on": h.obtained_on.isoformat(), "expires_on": h.expires_on.isoformat() if h.expires_on else None}
        for h in policy.opt_out.rsl_licences
    ]
    doc["rsl_usage"] = [{"purpose": p.id, "usage": p.licence_usage} for p in policy.purposes]
    doc["purpose_tokens"] = [
        {"token": p.product_token, "purpose": p.id, "description": p.description,
         "signal_purposes": list(p.signal_purposes)}
        for p in policy.purposes
        if p.product_token and p.product_token.lower() != policy.crawler.product_token.lower()
    ]
    doc["jurisdictions"] = {
        "exclude_tlds": [t if t.startswith(".") else f".{t}" for t in policy.jurisdictions.exclude_tlds],
        "exclude_domains": list(policy.jurisdictions.exclude_domains),
        "note": policy.jurisdictions.note,
    }
    setting = (settings.get("GDPR_OBJECTIONS") or None) if settings is not None else None
    doc["objections"] = {
        "path": str(policy.resolve_path(policy.objections.path)),
        "as_written": policy.objections.path,
        # an objection list the project's settings name, which the crawl checks too
        "setting": str(setting) if setting else None,
    }
    doc["checklist"] = _checklist(policy, findings, today, doc["consoles"])
    if not purge_on_open:
        doc["checklist"].append({
            "kind": "check", "line": None, "path": "settings.GDPR_PURGE_ON_OPEN",
            "text": "expired data is not purged at the start of a crawl (the project's settings switch it off)",
            "fix": "confirm that scrapy gdpr-purge is scheduled at least daily",
        })
    if setting:
        doc["checklist"].append({
            "kind": "warning", "line": None, "path": "settings.GDPR_OBJECTIONS",
            "text": f"the project's settings name an objection list ({setting}) that this policy does not",
            "fix": "name the list in the policy's objections.path and remove GDPR_OBJECTIONS from the settings",
        })
    if setting or not purge_on_open:
        order = {"error": 0, "warning": 1, "review": 2, "check": 3}
        doc["checklist"].sort(key=lambda item: (order.get(item["kind"], 9), item["line"] or 0))
    doc["notice"] = _notice(policy, doc)
    doc["crawler_description"] = crawler_description(policy, doc)
    return doc


def _record(policy: Policy, consoles: list[dict[str, Any]], purge_on_open: bool = True) -> dict[str, Any]:
    purposes = []
    for i, p in enumerate(policy.purposes):
        article, words, public = LAWFUL_BASES[p.lawful_basis]
        purposes.append(
            {
                "id": p.id,
                "description": p.description,
                "lawful_basis": p.lawful_basis,
                "lawful_basis_article": article,
                "lawful_basis_words": words,
                "lawful_basis_public": public,
                "basis_reference": p.basis_reference,
                "dpia_reference": p.dpia_reference,
                "reviewed_by": p.reviewed_by,
                "reviewed_on": p.reviewed_on.isoformat(),
                "review_due": p.review_due.isoformat(),
                "signal_purposes": list(p.signal_purposes),
                "signal_purposes_words": [SIGNAL_PURPOSES[s] for s in p.signal_purposes],
                "line": policy.line_of("purposes", i),
            }
        )
    biometric = policy.special_categories.biometric
    special = None
    if biometric is not None:
        article, words = ART9_CONDITIONS[biometric.condition]
        special = {
            "category": "biometric data (faces)",
            "condition": biometric.condition,
            "article": article,
            "words": words,
            "reference": biometric.reference,
            "reviewed_by": biometric.reviewed_by,
            "reviewed_on": biometric.reviewed_on.isoformat(),
        }
    retention = [
        {
            "what": f"records of type {name}" if name != "default"
            else ("records extracted from pages" if len(policy.retention.items) == 1 else "records of other types"),
            "key": f"retention.items.{name}",
            "period": value,
            "words": _duration_words(value),
        }
        for name, value in sorted(policy.retention.items.items(), key=lambda kv: (kv[0] == "default", kv[0]))
    ]
    retention += [
        {"what": what, "key": f"retention.{key}", "period": getattr(policy.retention, key),
         "words": _duration_words(getattr(policy.retention, key))}
        for key, what in (
            ("images", "stored images"),
            ("files", "stored files"),
            ("logs", "audit log and crawl logs"),
            ("caches", "caches (robots.txt, terms, HTTP cache)"),
        )
    ]
    return {
        "controller": _contact(policy.controller),
        "representative": _contact(policy.representative),
        "dpo": _contact(policy.dpo),
        "purposes": purposes,
        "data_subjects": [{"value": v, "words": _words(v)} for v in policy.data_subjects],
        "data_categories": [{"value": v, "words": _words(v)} for v in policy.data_categories],
        "special_categories": special,
        "recipients": [
            {**r.model_dump(mode="json"), "role_words": RECIPIENT_ROLES[r.role]} for r in policy.recipients
        ],
        "transfers": [
            {**t.model_dump(mode="json"), "safeguard_words": SAFEGUARDS[t.safeguard]} for t in policy.transfers
        ],
        "retention": retention,
        "security_measures": _measures(policy, purge_on_open) + [c["words"] for c in consoles],
    }


def _measures(policy: Policy, purge_on_open: bool = True) -> list[str]:
    robots = policy.robots
    return [
        ("Only the domains listed in the policy are contacted, and only on the allowed paths (besides "
        "robots.txt and the reviewed terms page of each listed domain, wherever it is published); "
        "everything else is refused before any connection is made."),
        "Hosts that resolve to loopback, private, link-local or cloud-metadata addresses are refused"
        + (
            " (except the domains marked allow_private_network: "
            + ", ".join(d.domain for d in policy.domains if d.allow_private_network)
            + ")."
            if any(d.allow_private_network for d in policy.domains)
            else "."
        ),
        ("A domain is crawled only with a recorded terms review that permits it; the terms text is "
        f"re-checked every {_duration_words(policy.terms_check.interval)} and crawling of the domain "
        "stops when it no longer matches the reviewed fingerprint."),
        (f"robots.txt is obeyed for the product token {policy.crawler.product_token}; an unreachable "
        "robots.txt (server error, too many requests) means nothing on that site is fetched; "
        f"robots.txt is cached for at most {_duration_words(robots.cache_ttl)}, and a Crawl-delay up to "
        f"{_duration_words(robots.max_crawl_delay)} is honoured."),
        "Opt-out signals (listed below) are checked on every response before anything is kept.",
        "The objection list is checked before every request and before every record is stored.",
        ("Faces in images are detected on this machine (no image is sent to another service) and "
        f"{FACE_ACTIONS[policy.faces.action].split(':')[0]}; image metadata (EXIF, GPS location) is removed."),
        "Every stored record, image and file carries an expiry date; what has expired is deleted "
        + ("at the start of every crawl and whenever scrapy gdpr-purge runs." if purge_on_open else
           "when scrapy gdpr-purge runs, which must be scheduled: the project's settings switch off the purge "
           "at the start of a crawl (GDPR_PURGE_ON_OPEN)."),
        ("Every refusal is written to an audit log with the policy clause that caused it; every crawl "
        "records the fingerprint of this policy."),
        (f"Requests are spaced ({_seconds_words(policy.politeness.default_delay)} between requests to a "
        f"site by default, at most {policy.politeness.default_concurrency} at a time), and a site's "
        f"Retry-After is honoured up to {_duration_words(policy.politeness.retry_after_max)}."),
    ]


def _domain(policy: Policy, i: int) -> dict[str, Any]:
    rule = policy.domains[i]
    terms = rule.terms
    if rule.rate_limit is not None:
        delay, concurrency = rule.rate_limit.delay, rule.rate_limit.concurrency
    else:
        delay, concurrency = policy.politeness.default_delay, policy.politeness.default_concurrency
    refused = _always_refused(policy, i)
    crawled = refused is None and terms is not None and (
        terms.verdict == "none_published"
        or (terms.verdict in ("permits", "conditional") and terms.fingerprint is not None)
    )
    if refused is not None:
        status = f"not crawled: {refused}"
    elif terms is None:
        status = "not crawled: no terms review is recorded"
    elif terms.verdict == "forbids":
        status = "not crawled: the terms forbid it"
    elif terms.verdict == "none_published":
        status = "crawled: no terms published"
    elif terms.fingerprint is None:
        status = "not crawled: no fingerprint of the reviewed terms is recorded"
    else:
        status = "crawled" + (" under conditions" if terms.verdict == "conditional" else "")
    return {
        "domain": rule.domain,
        "include_subdomains": rule.include_subdomains,
        "allow_private_network": rule.allow_private_network,
        "allow_paths": list(rule.allow_paths),
        "deny_paths": list(rule.deny_paths),
        "rate_limit": {
            "delay": delay,
            "concurrency": concurrency,
            "words": f"{_seconds_words(delay)} between requests, at most {concurrency} at a time",
            "from_policy_default": rule.rate_limit is None,
        },
        "terms": None
        if terms is None
        else {
            "url": terms.url,
            "verdict": terms.verdict,
            "verdict_words": VERDICTS[terms.verdict],
            "conditions": list(terms.conditions),
            "reviewed_by": terms.reviewed_by,
            "reviewed_on": terms.reviewed_on.isoformat(),
            "fingerprint": terms.fingerprint,
        },
        "crawled": crawled,
        "status": status,
        "line": policy.line_of("domains", i),
    }


def _always_refused(policy: Policy, i: int) -> str | None:
    """Why the request gate refuses every request to domain ``i`` whatever its terms, or None.

    The same rules as :class:`scrapy_gdpr.gate.scope.PolicyGate`, for what can be known
    without DNS: an excluded jurisdiction, and an address literal (or ``localhost``, or
    a cloud metadata name) that is not public. A host name that resolves to a private
    address can only be known at crawl time; the gate refuses it then.
    """
    from scrapy_gdpr.gate.addresses import METADATA_HOSTS, address_class
    from scrapy_gdpr.gate.objections import canonical_host

    rule = policy.domains[i]
    host = canonical_host(rule.domain)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None:
        tlds = {t.lstrip(".").lower() for t in policy.jurisdictions.exclude_tlds}
        tld = host.rsplit(".", 1)[-1]
        if tld in tlds:
            return f".{tld} is an excluded top-level domain (jurisdictions.exclude_tlds)"
        excluded = {canonical_host(d) for d in policy.jurisdictions.exclude_domains}
        name = host
        while name:
            if name in excluded:
                return f"{host} is under the excluded domain {name} (jurisdictions.exclude_domains)"
            name = name.partition(".")[2]
    if host in METADATA_HOSTS or host.endswith(".metadata.google.internal"):
        return f"{host} is a cloud metadata service, which is always refused"
    if ip is None and (host == "localhost" or host.endswith(".localhost")):
        kind = "loopback"
        said = f"{host} is a loopback name"
    elif ip is not None and (kind := address_class(ip) or "") != "":
        said = f"{host} is a {kind} address"
        if kind.startswith("cloud metadata"):
            return f"{said}, which is always refused"
    else:
        return None
    if rule.allow_private_network:
        return None
    return (f"{said} and allow_private_network is not set on the domain, so every request to it is refused "
            "(set it only for a local test site)")


def _handling(policy: Policy) -> dict[str, Any]:
    faces = policy.faces
    keep = faces.action == "keep"
    biometric = policy.special_categories.biometric
    if keep and biometric is not None:
        article, words = ART9_CONDITIONS[biometric.condition]
        art9 = f"Faces are kept under {article} ({words}), documented in {biometric.reference}."
    elif biometric is not None:
        article, words = ART9_CONDITIONS[biometric.condition]
        art9 = (
            f"An Art. 9 condition is documented ({article}, {words}; {biometric.reference}), "
            "but faces are not kept, so it is not relied on."
        )
    else:
        art9 = "No Art. 9 condition is documented, so no biometric data may be kept: faces are never stored unredacted."
    face_words = f"Faces found in images are {FACE_ACTIONS[faces.action]}."
    purposes = list(policy.signal_purposes())
    pages = [
        ("Pages are fetched only from the listed domains and paths, after robots.txt, the terms review, "
        "the excluded jurisdictions and the objection list allow it."),
        "Nothing is kept from a page whose opt-out signals reserve any of this crawl's purposes ("
        + (", ".join(SIGNAL_PURPOSES[sp] for sp in purposes) or "none are named in the policy")
        + "); an image or other file that reserves one is refused when it arrives.",
        "What the spider extracts from a page is kept for the retention period of its record type.",
    ]
    images = [
        "Every image is checked for faces before it is stored; images are never stored unchecked.",
        face_words,
        "Image metadata (EXIF, GPS location, camera details) is removed when the image is re-encoded.",
        f"Images larger than {faces.max_pixels:,} pixels, and content that cannot be decoded, are not stored.",
    ]
    if faces.allow_unchecked_types:
        images.append(
            "These types may be stored without a face check: " + ", ".join(faces.allow_unchecked_types) + "."
        )
    images.append(
        "Only the number of faces found and the action taken are recorded; face positions, face "
        "templates or other biometric data are never stored."
    )
    return {
        "pages": pages,
        "images": images,
        "faces": {
            "action": faces.action,
            "words": face_words,
            "art9": art9,
            "margin": faces.margin,
            "margin_words": margin_words(faces.margin),
            "sensitivity": faces.sensitivity,
            "sensitivity_words": SENSITIVITY[faces.sensitivity],
            "min_confidence": faces.min_confidence,
            "max_pixels": faces.max_pixels,
            "allow_unchecked_types": list(faces.allow_unchecked_types),
        },
    }


def _checklist(
    policy: Policy, findings: list[Finding], today: date, consoles: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    covered: set[str] = set()
    for f in findings:
        items.append({"kind": f.severity, "line": f.line, "path": f.path, "text": f.message, "fix": f.fix})
        covered.add(f.path)

    def add(kind: str, path: tuple[Any, ...], text: str, fix: str, *, present: bool = True) -> None:
        key = _dotted(path)
        if key in covered:
            return
        covered.add(key)
        line = policy.line_of(*path) if present else None
        items.append({"kind": kind, "line": line, "path": key, "text": text, "fix": fix})

    horizon = today + timedelta(days=REVIEW_HORIZON_DAYS)
    for i, p in enumerate(policy.purposes):
        if p.review_due <= horizon:
            days = (p.review_due - today).days
            add("review", ("purposes", i, "review_due"),
                f"the lawful-basis review of purpose '{p.id}' is due on {p.review_due.isoformat()} (in {days} days)",
                "review the lawful basis, then update reviewed_on and review_due")
        if p.lawful_basis == "legitimate_interests" and not p.basis_reference:
            add("warning", ("purposes", i, "lawful_basis"), "legitimate interests without an LIA reference",
                "record the legitimate interests assessment id in basis_reference")
        if not p.dpia_reference and _dotted(("purposes", i)) not in covered:
            add("check", ("purposes", i, "dpia_reference"),
                f"purpose '{p.id}' has no DPIA reference",
                "confirm that no DPIA is required (Art. 35), or record its id in dpia_reference")
    for i, rule in enumerate(policy.domains):
        terms = rule.terms
        if (refused := _always_refused(policy, i)) is not None:
            add("warning", ("domains", i), f"{rule.domain} is listed but never crawled: {refused}",
                "remove the domain, or change what refuses it")
        if terms is not None and terms.verdict not in ("forbids", "none_published") and terms.fingerprint is None:
            add("warning", ("domains", i, "terms"),
                f"no fingerprint of the reviewed terms of {rule.domain} is recorded",
                f"run 'scrapy gdpr-terms {terms.url}' and record the fingerprint")
        if terms is not None and terms.verdict == "conditional":
            add("check", ("domains", i, "terms", "conditions"),
                f"{rule.domain} may be crawled only under conditions: " + "; ".join(terms.conditions),
                "confirm that the crawl meets every condition")
    if policy.dpo is None:
        add("check", ("dpo",), "no data protection officer is recorded",
            "record the DPO, or confirm that none is required (Art. 37)", present=False)
    for i, t in enumerate(policy.transfers):
        if not t.reference:
            add("check", ("transfers", i, "reference"), f"the transfer to {t.country} has no reference to its safeguard",
                "record where the safeguard is documented", present=False)
    items.extend(
        {
            "kind": "warning", "line": None, "path": f"settings.{console['setting']}",
            "text": f"Scrapy's {console['name']} is switched on by the project's settings: whoever can reach "
            "it can read and change the running crawl",
            "fix": f"remove {console['setting']} from the project's settings (the add-on then switches it off), "
            "or record why it is needed",
        }
        for console in consoles if console["enabled"]
    )
    order = {"error": 0, "warning": 1, "review": 2, "check": 3}
    items.sort(key=lambda item: (order.get(item["kind"], 9), item["line"] or 0))
    return items


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _faces_detail(policy: Policy, doc: dict[str, Any]) -> str:
    common = "Faces are detected on our own computers; no image is sent to another service. "
    if policy.faces.action == "keep":
        return common + str(doc["handling"]["faces"]["art9"]) + " Image metadata such as GPS location is removed."
    return common + "No face template or other biometric data is kept. Image metadata such as GPS location is removed."


def _notice(policy: Policy, doc: dict[str, Any]) -> dict[str, Any]:
    token = policy.crawler.product_token
    record = doc["record"]
    honoured = [s for s in doc["opt_out"] if s["honoured"]]
    retention = [f"{r['what']}: {r['words']}" for r in record["retention"]]
    contact = policy.dpo or policy.controller
    denied = sorted({p for d in policy.domains for p in d.deny_paths})
    robots_block_all = f"User-agent: {token}\nDisallow: /\n"
    robots_block_some = f"User-agent: {token}\nDisallow: /private/\n"
    return {
        "title": f"About {token}, the web crawler of {policy.controller.name}",
        "product_token": token,
        "user_agent": policy.crawler.user_agent,
        "info_url": policy.crawler.info_url,
        # the machine-readable description, written beside the page (scrapy gdpr-report)
        "description_file": description_file(policy.policy_id),
        "who": {
            "controller": record["controller"],
            "representative": record["representative"],
            "dpo": record["dpo"],
        },
        "why": [
            {"purpose": p["description"], "basis": p["lawful_basis_public"], "article": p["lawful_basis_article"]}
            for p in record["purposes"]
        ],
        "what": {
            "data_categories": [_public_words(c["value"]) for c in record["data_categories"]],
            "data_subjects": [_public_words(s["value"]) for s in record["data_subjects"]],
            "pages": "Public pages of the websites listed by the controller, and what the crawler extracts from them.",
            "faces": doc["handling"]["faces"]["words"],
            "faces_detail": _faces_detail(policy, doc),
            "retention": retention,
            "recipients": [f"{r['name']} ({r['role_words']})" for r in record["recipients"]],
            "transfers": [f"{t['country']}: {t['safeguard_words']}" for t in record["transfers"]],
        },
        "block": {
            "robots_txt_all": robots_block_all,
            "robots_txt_some": robots_block_some,
            "signals": [{"signal": s["signal"], "example": s["example"]} for s in honoured],
            "purpose_tokens": [
                {"token": t["token"], "purpose": t["description"], "robots_txt": f"User-agent: {t['token']}\nDisallow: /\n"}
                for t in doc["purpose_tokens"]
            ],
            "note": "robots.txt is read before any page of a site is fetched; changes apply within "
            f"{_duration_words(policy.robots.cache_ttl)}.",
            "example_denied_paths": denied,
        },
        "rights": {
            "contact": _contact(contact),
            "how": [
                ("Write to the contact below to object to the crawling of a page or a site about you, "
                "or to ask which data about you we hold (access) or to have it deleted (erasure)."),
                "Give the address (URL) of the page, image or site concerned; that is all we need to find it.",
                "No identity document is needed, and there is no time limit: you can ask at any time.",
                ("Once we have your objection, the crawler skips what it covers on every later crawl, and "
                "what we already hold is deleted."),
                "You can also complain to a data protection supervisory authority.",
            ],
        },
    }
