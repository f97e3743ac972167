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

from scrapy_gdpr import __version__, _html
from scrapy_gdpr.durations import Duration
from scrapy_gdpr.policy import REVIEW_WARNING_DAYS
from scrapy_gdpr.addon import console_enabled
from scrapy_gdpr.description import crawler_description, description_file

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

# --------------------------------------------------------------------------- plain words

LAWFUL_BASES: dict[str, tuple[str, str, str]] = {
    # value: (article, words for the officer, words for the public)
    "consent": ("Art. 6(1)(a)", "consent of the data subjects", "you gave your consent"),
    "contract": ("Art. 6(1)(b)", "performance of a contract with the data subject", "it is needed for a contract with you"),
    "legal_obligation": ("Art. 6(1)(c)", "a legal obligation of the controller", "the law requires it of us"),
    "vital_interests": ("Art. 6(1)(d)", "protection of vital interests", "it protects someone's life or safety"),
    "public_task": ("Art. 6(1)(e)", "a task carried out in the public interest", "it is a task in the public interest"),
    "legitimate_interests": (
        "Art. 6(1)(f)",
        "legitimate interests of the controller, balanced against the data subjects' rights",
        "it is in our legitimate interests, which we have weighed against your rights and interests",
    ),
}

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

SAFEGUARDS: dict[str, str] = {
    "adequacy_decision": "an adequacy decision of the European Commission (Art. 45)",
    "standard_contractual_clauses": "standard contractual clauses (Art. 46(2)(c))",
    "binding_corporate_rules": "binding corporate rules (Art. 47)",
    "derogation": "a derogation for a specific situation (Art. 49)",
    "other": "another safeguard (see the reference)",
}

RECIPIENT_ROLES: dict[str, str] = {
    "processor": "processor acting on the controller's instructions (Art. 28)",
    "controller": "separate controller",
    "joint_controller": "joint controller (Art. 26)",
    "public": "the public (the data is published)",
}

SIGNAL_PURPOSES: dict[str, str] = {
    "search": "search indexing",
    "ai-train": "training AI models",
    "ai-input": "input to AI answers (retrieval, grounding)",
}

VERDICTS: dict[str, str] = {
    "permits": "the terms permit crawling",
    "forbids": "the terms forbid crawling: the domain is never crawled",
    "conditional": "the terms permit crawling under conditions",
    "none_published": "the site publishes no terms of use; a page appearing where terms would be stops the crawl",
}

FACE_ACTIONS: dict[str, str] = {
    "blur": "blurred beyond recognition before the image is stored",
    "pixelate": "pixelated beyond recognition before the image is stored",
    "fill": "covered with a solid block before the image is stored",
    "drop_image": "not stored at all: an image in which a face is found is discarded",
    "drop_item": "not stored at all: the whole record that contains an image with a face is discarded",
    "keep": "kept unredacted",
}

SENSITIVITY: dict[str, str] = {
    "strict": "strict (finds the most faces, including small and turned faces; slowest)",
    "balanced": "balanced",
    "fast": "fast (may miss small faces)",
}

#: (policy key, name of the signal, what it looks like)
OPT_OUT_SIGNALS: list[tuple[str, str, str]] = [
    ("x_robots_tag", "X-Robots-Tag HTTP header", "X-Robots-Tag: noindex / noai / noimageai / none"),
    ("meta_robots", "robots meta tag in HTML pages", '<meta name="robots" content="noindex, noai, noimageai">'),
    ("tdmrep", "TDMRep (W3C text and data mining reservation)", "tdm-reservation: 1 (HTTP header, HTML meta or /.well-known/tdmrep.json)"),
    ("content_signal", "Content-Signal (HTTP header or robots.txt)", "Content-Signal: search=yes, ai-train=no"),
    ("content_usage", "Content-Usage (IETF AI preferences; HTTP header or robots.txt)", "Content-Usage: train-ai=n"),
    ("image_metadata", "IPTC/PLUS Data Mining in image metadata (XMP)",
     "plus:DataMining = DMI-PROHIBITED-AIMLTRAINING"),
    ("content_credentials", "C2PA Content Credentials training-and-mining assertion",
     '"cawg.training-mining": {"entries": {"cawg.ai_training": {"use": "notAllowed"}}}'),
    ("payment_required", "HTTP 402 Payment Required (pay-per-crawl): refused, never paid nor retried",
     "HTTP/1.1 402 Payment Required / crawler-price: USD 0.01"),
    ("rsl", "RSL licences (robots.txt License:, Link header, <link rel=\"license\">, inline): prohibited or "
     "unlicensed uses refused", "License: https://example.org/license.xml"),
]


def _contact(contact: Contact | None) -> dict[str, Any] | None:
    if contact is None:
        return None
    return contact.model_dump(mode="json", exclude_none=True)


def _contact_line(contact: dict[str, Any] | None) -> str:
    if not contact:
        return ""
    parts = [contact["name"]]
    parts += [contact[k] for k in ("email", "phone", "url", "address") if contact.get(k)]
    return ", ".join(parts)


def _cap(text: str) -> str:
    """Capitalise the first letter only (``str.capitalize`` lower-cases "HTTP")."""
    return text[:1].upper() + text[1:]


def _words(value: str) -> str:
    """``user.content.self_image`` -> ``user content: self image``."""
    parts = [p.replace("_", " ").replace("-", " ") for p in value.split(".")]
    return f"{' '.join(parts[:-1])}: {parts[-1]}" if len(parts) > 1 else parts[0]


#: Plain words for common data category names (the last part of a dotted name).
CATEGORY_WORDS: dict[str, str] = {
    "self_image": "photos and other images of people",
    "image": "images",
    "name": "names",
    "email": "email addresses",
    "contact": "contact details",
    "phone_number": "phone numbers",
    "job_title": "job titles",
    "location": "locations",
    "biometric": "biometric data",
    "content": "content people published",
    "public": "content people published",
}


def _public_words(value: str) -> str:
    last = value.rsplit(".", 1)[-1]
    return CATEGORY_WORDS.get(last, last.replace("_", " ").replace("-", " "))


def _duration_words(value: str) -> str:
    return Duration.parse(value).describe()


def _seconds_words(seconds: float) -> str:
    if seconds == 0:
        return "no delay"
    shown = int(seconds) if float(seconds).is_integer() else seconds
    return f"{shown} second{'' if seconds == 1 else 's'}"


# --------------------------------------------------------------------------- consoles

#: Scrapy's consoles that open a way into a running crawl: (setting, extension, name, what it does).
CONSOLES: list[tuple[str, str, str, str]] = [
    ("TELNETCONSOLE_ENABLED", "scrapy.extensions.telnet.TelnetConsole", "telnet console",
     "a Python prompt inside the running crawl (user name and password from TELNETCONSOLE_USERNAME "
     "and TELNETCONSOLE_PASSWORD, or a password printed in the crawl log)"),
    ("REMOTE_CONTROL_ENABLED", "scrapy.extensions.remote_control.RemoteControl", "remote-control server",
     "an HTTP server that runs Python code sent to it inside the running crawl (token in a job file "
     "in the user's profile folder)"),
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
    out = [
        "Only the domains listed in the policy are contacted, and only on the allowed paths (besides "
        "robots.txt and the reviewed terms page of each listed domain, wherever it is published); "
        "everything else is refused before any connection is made.",
        "Hosts that resolve to loopback, private, link-local or cloud-metadata addresses are refused"
        + (
            " (except the domains marked allow_private_network: "
            + ", ".join(d.domain for d in policy.domains if d.allow_private_network)
            + ")."
            if any(d.allow_private_network for d in policy.domains)
            else "."
        ),
        "A domain is crawled only with a recorded terms review that permits it; the terms text is "
        f"re-checked every {_duration_words(policy.terms_check.interval)} and crawling of the domain "
        "stops when it no longer matches the reviewed fingerprint.",
        f"robots.txt is obeyed for the product token {policy.crawler.product_token}; an unreachable "
        "robots.txt (server error, too many requests) means nothing on that site is fetched; "
        f"robots.txt is cached for at most {_duration_words(robots.cache_ttl)}, and a Crawl-delay up to "
        f"{_duration_words(robots.max_crawl_delay)} is honoured.",
        "Opt-out signals (listed below) are checked on every response before anything is kept.",
        "The objection list is checked before every request and before every record is stored.",
        "Faces in images are detected on this machine (no image is sent to another service) and "
        f"{FACE_ACTIONS[policy.faces.action].split(':')[0]}; image metadata (EXIF, GPS location) is removed.",
        "Every stored record, image and file carries an expiry date; what has expired is deleted "
        + ("at the start of every crawl and whenever scrapy gdpr-purge runs." if purge_on_open else
           "when scrapy gdpr-purge runs, which must be scheduled: the project's settings switch off the purge "
           "at the start of a crawl (GDPR_PURGE_ON_OPEN)."),
        "Every refusal is written to an audit log with the policy clause that caused it; every crawl "
        "records the fingerprint of this policy.",
        f"Requests are spaced ({_seconds_words(policy.politeness.default_delay)} between requests to a "
        f"site by default, at most {policy.politeness.default_concurrency} at a time), and a site's "
        f"Retry-After is honoured up to {_duration_words(policy.politeness.retry_after_max)}.",
    ]
    return out


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

    The same rules as :class:`scrapy_gdpr.gate.PolicyGate`, for what can be known
    without DNS: an excluded jurisdiction, and an address literal (or ``localhost``, or
    a cloud metadata name) that is not public. A host name that resolves to a private
    address can only be known at crawl time; the gate refuses it then.
    """
    from scrapy_gdpr.gate import METADATA_HOSTS, address_class
    from scrapy_gdpr.objections import canonical_host

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
    purposes = list(dict.fromkeys(sp for p in policy.purposes for sp in p.signal_purposes))
    pages = [
        "Pages are fetched only from the listed domains and paths, after robots.txt, the terms review, "
        "the excluded jurisdictions and the objection list allow it.",
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
    for console in consoles:
        if console["enabled"]:
            items.append({
                "kind": "warning", "line": None, "path": f"settings.{console['setting']}",
                "text": f"Scrapy's {console['name']} is switched on by the project's settings: whoever can reach "
                "it can read and change the running crawl",
                "fix": f"remove {console['setting']} from the project's settings (the add-on then switches it off), "
                "or record why it is needed",
            })
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
                "Write to the contact below to object to the crawling of a page or a site about you, "
                "or to ask which data about you we hold (access) or to have it deleted (erasure).",
                "Give the address (URL) of the page, image or site concerned; that is all we need to find it.",
                "No identity document is needed, and there is no time limit: you can ask at any time.",
                "Once we have your objection, the crawler skips what it covers on every later crawl, and "
                "what we already hold is deleted.",
                "You can also complain to a data protection supervisory authority.",
            ],
        },
    }


# --------------------------------------------------------------------------- HTML

_e = _html.e
_c = _html.c
_table = _html.table
_kv = _html.kv
_ul = _html.ul
_page = _html.page


def _contact_html(contact: dict[str, Any] | None) -> str:
    if not contact:
        return "<span class='small'>not recorded</span>"
    out = [f"<strong>{_e(contact['name'])}</strong>"]
    if contact.get("email"):
        out.append(f"<a href='mailto:{_e(contact['email'])}'>{_e(contact['email'])}</a>")
    if contact.get("phone"):
        out.append(_e(contact["phone"]))
    if contact.get("url"):
        out.append(f"<a href='{_e(contact['url'])}'>{_e(contact['url'])}</a>")
    if contact.get("address"):
        out.append(_e(contact["address"]))
    return "<br>".join(out)


def render_review_html(doc: dict[str, Any]) -> str:
    """The review document for the privacy officer, as one self-contained HTML page."""
    pol, rec = doc["policy"], doc["record"]
    errors = [i for i in doc["checklist"] if i["kind"] == "error"]
    parts = [
        "<header class='doc'><p class='kicker'>Policy review &middot; record of processing (Art. 30 GDPR)</p>",
        f"<h1>{_e(pol['title'])}</h1>",
        f"<p class='meta'>Policy {_c(pol['id'])} &middot; file {_c(pol['file'])}</p>",
        f"<p class='meta'>Fingerprint {_c(pol['fingerprint'])}</p>",
        f"<p class='meta'>Generated on {_e(doc['generated_on'])} by {_e(doc['generator'])}"
        + (f"; dates checked as of {_e(doc['checked_as_of'])}" if doc["checked_as_of"] != doc["generated_on"] else "")
        + "</p></header>",
        "<div class='box ok'><p>This document describes, in plain language, what the crawler configured by this "
        "policy file does with personal data. A crawl records the fingerprint above; if it differs, the policy "
        "was changed after this review.</p>"
        f"<p><strong>{len(doc['checklist'])}</strong> open item(s) in the checklist at the end"
        + (f", <strong>{len(errors)}</strong> of them errors" if errors else "")
        + ".</p></div>",
        "<h2 id='record'>1. Record of processing</h2>",
        "<h3>Who is responsible</h3>",
        _kv([
            ("Controller", _contact_html(rec["controller"])),
            ("Representative in the EU (Art. 27)", _contact_html(rec["representative"])),
            ("Data protection officer", _contact_html(rec["dpo"])),
        ]),
        "<h3>Purposes and lawful basis (Art. 6)</h3>",
        _table(
            ["Purpose", "Lawful basis", "Documentation", "Review"],
            [
                [
                    f"<strong>{_e(p['description'])}</strong><br><span class='small'>id {_c(p['id'])}; opt-out purposes: "
                    f"{_e(', '.join(p['signal_purposes_words']))}</span>",
                    f"{_e(_cap(p['lawful_basis_words']))} <span class='small'>({_e(p['lawful_basis_article'])})</span>",
                    f"Basis: {_e(p['basis_reference'] or 'none recorded')}<br>DPIA: {_e(p['dpia_reference'] or 'none recorded')}",
                    f"Reviewed by {_e(p['reviewed_by'])} on {_e(p['reviewed_on'])}<br>Next review due "
                    f"<strong>{_e(p['review_due'])}</strong>",
                ]
                for p in rec["purposes"]
            ],
        ),
        "<h3>People and data concerned</h3>",
        _kv([
            ("Categories of data subjects", _ul([_e(s["words"]) for s in rec["data_subjects"]])),
            ("Categories of personal data", _ul([f"{_e(c['words'])} <span class='small'>{_c(c['value'])}</span>"
                                                  for c in rec["data_categories"]])),
            ("Special categories (Art. 9)", _e(
                f"{rec['special_categories']['category']}: {rec['special_categories']['words']} "
                f"({rec['special_categories']['article']}), documented in {rec['special_categories']['reference']}, "
                f"reviewed by {rec['special_categories']['reviewed_by']} on {rec['special_categories']['reviewed_on']}"
            ) if rec["special_categories"] else "None: no Art. 9 condition is documented, so no biometric data is kept."),
        ]),
        "<h3>Recipients and transfers</h3>",
        _table(["Recipient", "Role", "Purpose"],
               [[_e(r["name"]), _e(r["role_words"]), _e(r.get("purpose") or "")] for r in rec["recipients"]])
        if rec["recipients"] else "<p>No recipients are recorded: the data is not disclosed to anyone.</p>",
        _table(["Country", "Recipient", "Safeguard", "Reference"],
               [[_e(t["country"]), _e(t.get("recipient") or ""), _e(t["safeguard_words"]), _e(t.get("reference") or "none recorded")]
                for t in rec["transfers"]])
        if rec["transfers"] else "<p>No transfers outside the EEA are recorded.</p>",
        "<h3>How long data is kept</h3>",
        _table(["What", "Kept for", "Policy value"],
               [[_e(_cap(r["what"])), f"<strong>{_e(r['words'])}</strong>", f"{_c(r['key'])} = {_c(r['period'])}"]
                for r in rec["retention"]]),
        "<h3>Technical and organisational measures the extension enforces (Art. 32)</h3>",
        _ul([_e(m) for m in rec["security_measures"]]),
        "<h2 id='domains'>2. Domains and their terms reviews</h2>",
    ]
    if not doc["domains"]:
        parts.append("<div class='box bad'><p>No domains are listed: the crawler will not fetch anything.</p></div>")
    for d in doc["domains"]:
        t = d["terms"]
        rows = [
            ("Status", f"<span class='tag {'yes' if d['crawled'] else 'no'}'>{'crawled' if d['crawled'] else 'not crawled'}</span> "
             + _e(d["status"].split(": ", 1)[1] if ": " in d["status"] else d["status"].removeprefix("crawled").strip())),
            ("Subdomains", "included" if d["include_subdomains"] else "not included"),
            ("Allowed paths", ", ".join(_c(p) for p in d["allow_paths"]) or "all"),
            ("Denied paths", ", ".join(_c(p) for p in d["deny_paths"]) or "none"),
            ("Rate limit", _e(d["rate_limit"]["words"]) + (" <span class='small'>(policy default)</span>" if d["rate_limit"]["from_policy_default"] else "")),
        ]
        if d["allow_private_network"]:
            rows.append(("Private network", "allowed (local test sites only)"))
        if t is None:
            rows.append(("Terms review", "<strong>none recorded</strong>"))
        else:
            rows += [
                ("Terms", f"<a href='{_e(t['url'])}'>{_e(t['url'])}</a>"),
                ("Verdict", f"<strong>{_e(t['verdict'])}</strong>: {_e(t['verdict_words'])}"),
                ("Conditions", _ul([_e(c) for c in t["conditions"]]) if t["conditions"] else "none"),
                ("Reviewed", f"by {_e(t['reviewed_by'])} on {_e(t['reviewed_on'])}"),
                ("Fingerprint", _c(t["fingerprint"]) if t["fingerprint"] else "<strong>none recorded</strong>"),
            ]
        parts += [f"<h3>{_e(d['domain'])}</h3>", _kv(rows)]
    h = doc["handling"]
    parts += [
        "<h2 id='handling'>3. What the crawler does with pages, images and faces</h2>",
        "<h3>Pages</h3>", _ul([_e(x) for x in h["pages"]]),
        "<h3>Images</h3>", _ul([_e(x) for x in h["images"]]),
        "<h3>Faces</h3>",
        f"<div class='box{' bad' if h['faces']['action'] == 'keep' else ''}'><p><strong>{_e(h['faces']['words'])}</strong></p>"
        f"<p>{_e(h['faces']['art9'])}</p></div>",
        _kv([
            ("Action", _c(h["faces"]["action"])),
            ("Detection sensitivity", _e(h["faces"]["sensitivity_words"])),
            ("Margin around a face", f"{h['faces']['margin']:.0%} of the face size"),
            ("Minimum confidence", _e(h["faces"]["min_confidence"] if h["faces"]["min_confidence"] is not None
                                       else "the sensitivity's default")),
        ]),
        "<h2 id='optout'>4. Opt-out signals honoured</h2>",
        _table(["Signal", "Honoured", "Example"],
               [[_e(s["signal"]), f"<span class='tag {'yes' if s['honoured'] else 'no'}'>{'yes' if s['honoured'] else 'no'}</span>",
                 _c(s["example"])] for s in doc["opt_out"]]),
        "<p>robots.txt is always obeyed; it cannot be switched off.</p>",
        f"<p>Deny lists (domains never contacted, with their subdomains): "
        f"{', '.join(_c(d) for d in doc['deny_lists']) or 'none'}</p>",
        "<p>Per-purpose robots.txt product tokens (a page is kept for the purpose only when the token may "
        "fetch it): " + (", ".join(f"{_c(t['token'])} ({_e(t['purpose'])})" for t in doc["purpose_tokens"]) or "none")
        + "</p>",
        "<p>RSL usage types each purpose needs a site's licence to grant: "
        + "; ".join(f"{_e(u['purpose'])}: {', '.join(_c(x) for x in u['usage']) or 'none'}" for u in doc["rsl_usage"])
        + "</p>",
        "<p>RSL licences held (a usage a site licenses only for a fee or to registered clients is allowed with "
        "one of these): " + (", ".join(
            f"{_c(h['document'])} ({_e(', '.join(h['usage']))}; {_e(h['reference'])}, {_e(h['obtained_on'])}"
            + (f" to {_e(h['expires_on'])}" if h["expires_on"] else "") + ")" for h in doc["rsl_licences"]) or "none")
        + "</p>",
        "<h2 id='jurisdictions'>5. Excluded jurisdictions</h2>",
        _kv([
            ("Top-level domains", ", ".join(_c(t) for t in doc["jurisdictions"]["exclude_tlds"]) or "none"),
            ("Domains", ", ".join(_c(t) for t in doc["jurisdictions"]["exclude_domains"]) or "none"),
            ("Note", _e(doc["jurisdictions"]["note"] or "")),
        ]),
        "<h2 id='objections'>6. Objections</h2>",
        f"<p>Objections and erasure requests are kept in {_c(doc['objections']['path'])} "
        f"(<code>objections.path: {_e(doc['objections']['as_written'])}</code>, relative to the policy file). "
        "Every request and every record is checked against it.</p>",
        (f"<div class='box bad'><p>The project's settings also name an objection list: "
         f"<code>GDPR_OBJECTIONS = {_e(doc['objections']['setting'])}</code>. A crawl with these settings checks "
         "that list, which this review does not cover.</p></div>") if doc["objections"].get("setting") else "",
        "<h2 id='checklist'>7. Checklist of open items</h2>",
    ]
    if doc["checklist"]:
        parts.append(_table(
            ["", "Item", "Line", "What to do"],
            [[f"<span class='tag {_e(i['kind'])}'>{_e(i['kind'])}</span>",
              (f"{_c(i['path'])}: " if i["path"] else "") + _e(i["text"]),
              f"line&nbsp;{i['line']}" if i["line"] else "<span class='small'>not in the file</span>", _e(i["fix"])]
             for i in doc["checklist"]],
        ))
    else:
        parts.append("<p>No open items.</p>")
    parts += [
        "<h2 id='signoff'>8. Sign-off</h2>",
        f"<p>I have reviewed policy {_c(pol['id'])} with fingerprint {_c(pol['fingerprint'])}.</p>",
        "<table class='kv signoff'><tbody>"
        + "<tr><th scope='row'>Decision</th><td class='small'>approved &nbsp;/&nbsp; approved with conditions "
        "&nbsp;/&nbsp; not approved</td></tr>"
        + "".join(f"<tr><th scope='row'>{k}</th><td></td></tr>" for k in ("Conditions", "Name", "Date", "Signature"))
        + "</tbody></table>",
        f"<footer>Policy {_c(pol['id'])} &middot; {_c(pol['file'])} &middot; {_c(pol['fingerprint'])}</footer>",
    ]
    return _page(f"Policy review: {pol['title']}", "\n".join(parts))


def render_notice_html(doc: dict[str, Any]) -> str:
    """The public crawler information page (Art. 14 notice)."""
    n = doc["notice"]
    who = n["who"]
    what = n["what"]
    rights_contact = n["rights"]["contact"]
    parts = [
        "<header class='doc'><p class='kicker'>Crawler information</p>",
        f"<h1>{_e(n['title'])}</h1>",
        f"<p class='meta'>User-Agent: {_c(n['user_agent'])}</p>",
        f"<p class='meta'>robots.txt product token: {_c(n['product_token'])}</p></header>",
        f"<p>{_e(n['product_token'])} is a web crawler: a program that visits public web pages and keeps some of "
        "what it finds. Pages can contain personal data, such as names and photos of people. This page explains "
        "what we do with it, how to keep the crawler away, and how to use your rights.</p>",
        "<h2 id='who'>Who runs this crawler</h2>",
        _kv([("Controller", _contact_html(who["controller"]))]
            + ([("Representative in the EU", _contact_html(who["representative"]))] if who["representative"] else [])
            + ([("Data protection officer", _contact_html(who["dpo"]))] if who["dpo"] else [])),
        "<h2 id='why'>Why we crawl</h2>",
        _ul([f"{_e(w['purpose'].rstrip('.'))}. <span class='small'>We may do this because {_e(w['basis'])} "
             f"({_e(w['article'])} GDPR).</span>" for w in n["why"]]),
        "<h2 id='what'>What we collect and how long we keep it</h2>",
        f"<p>{_e(what['pages'])}</p>",
    ]
    if what["data_categories"]:
        parts.append("<p>This can include: " + _e(", ".join(what["data_categories"])) + ".</p>")
    if what["data_subjects"]:
        parts.append("<p>It can concern: " + _e(", ".join(what["data_subjects"])) + ".</p>")
    parts += [
        f"<div class='box'><p><strong>{_e(what['faces'])}</strong></p><p>{_e(what['faces_detail'])}</p></div>",
        "<h3>How long we keep it</h3>",
        _ul([_e(r[0].upper() + r[1:]) for r in what["retention"]]),
        "<p>After that, it is deleted automatically.</p>",
    ]
    if what["recipients"]:
        parts += ["<h3>Who receives it</h3>", _ul([_e(r) for r in what["recipients"]])]
    if what["transfers"]:
        parts += ["<h3>Transfers outside the EEA</h3>", _ul([_e(t) for t in what["transfers"]])]
    block = n["block"]
    parts += [
        "<h2 id='block'>How to block the crawler</h2>",
        f"<p>Add these lines to the <code>robots.txt</code> file at the root of your site to keep "
        f"{_e(n['product_token'])} out of the whole site:</p>",
        f"<pre><code>{_e(block['robots_txt_all'])}</code></pre>",
        "<p>or out of part of it:</p>",
        f"<pre><code>{_e(block['robots_txt_some'])}</code></pre>",
        f"<p>{_e(block['note'])}</p>",
    ]
    for t in block["purpose_tokens"]:
        parts += [
            f"<p>To let {_e(n['product_token'])} fetch your pages but keep them out of one use only "
            f"({_e(t['purpose'].rstrip('.'))}), name that use's own token:</p>",
            f"<pre><code>{_e(t['robots_txt'])}</code></pre>",
        ]
    if block["signals"]:
        parts += [
            "<p>The crawler also honours these signals, on a page or for a whole site:</p>",
            _table(["Signal", "Example"], [[_e(s["signal"]), _c(s["example"])] for s in block["signals"]]),
        ]
    parts += [
        "<h2 id='machine'>For programs</h2>",
        f"<p>A machine-readable description of this crawler (its product tokens per purpose, User-Agent, contact "
        f"and the signals it honours) is published next to this page: "
        f"<a rel='alternate' type='application/json' href='{_e(n['description_file'])}'>"
        f"{_e(n['description_file'])}</a>.</p>",
        "<h2 id='rights'>How to object, or ask for access or erasure</h2>",
        _ul([_e(x) for x in n["rights"]["how"]]),
        _kv([("Contact", _contact_html(rights_contact))]),
    ]
    parts.append(
        f"<footer>Crawler information for {_e(n['product_token'])} &middot; {_e(n['info_url'])} &middot; "
        f"last updated {_e(doc['generated_on'])}</footer>"
    )
    return _page(n["title"], "\n".join(parts))


# --------------------------------------------------------------------------- Markdown


def _md(value: Any) -> str:
    text = "" if value is None else str(value)
    for ch in "\\|*_`<>[]":
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", " ")


def _mdc(value: Any) -> str:
    text = str(value).replace("|", "\\|")
    return f"`{text}`"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def render_review_markdown(doc: dict[str, Any]) -> str:
    """The review document as Markdown (for a ticket, a wiki or version control)."""
    pol, rec = doc["policy"], doc["record"]
    L: list[str] = [
        f"# Policy review: {_md(pol['title'])}",
        "",
        f"- Policy: {_mdc(pol['id'])}",
        f"- File: {_mdc(pol['file'])}",
        f"- Fingerprint: {_mdc(pol['fingerprint'])}",
        f"- Generated on {doc['generated_on']} by {_md(doc['generator'])}"
        + (f"; dates checked as of {doc['checked_as_of']}" if doc["checked_as_of"] != doc["generated_on"] else ""),
        f"- Open items: {len(doc['checklist'])} (see the checklist at the end)",
        "",
        "## 1. Record of processing (Art. 30)",
        "",
        "### Who is responsible",
        "",
        f"- Controller: {_md(_contact_line(rec['controller']))}",
        f"- Representative in the EU (Art. 27): {_md(_contact_line(rec['representative'])) or 'not recorded'}",
        f"- Data protection officer: {_md(_contact_line(rec['dpo'])) or 'not recorded'}",
        "",
        "### Purposes and lawful basis (Art. 6)",
        "",
    ]
    L += _md_table(
        ["Purpose", "Lawful basis", "Documentation", "Review"],
        [[f"{_md(p['description'])} ({_mdc(p['id'])})",
          f"{_md(_cap(p['lawful_basis_words']))} ({p['lawful_basis_article']})",
          f"Basis: {_md(p['basis_reference'] or 'none recorded')}; DPIA: {_md(p['dpia_reference'] or 'none recorded')}",
          f"Reviewed by {_md(p['reviewed_by'])} on {p['reviewed_on']}; due {p['review_due']}"]
         for p in rec["purposes"]],
    )
    L += ["### People and data concerned", ""]
    L.append("- Data subjects: " + (", ".join(_md(s["words"]) for s in rec["data_subjects"]) or "none recorded"))
    L.append("- Personal data: " + (", ".join(f"{_md(c['words'])} ({_mdc(c['value'])})" for c in rec["data_categories"]) or "none recorded"))
    sc = rec["special_categories"]
    L.append("- Special categories (Art. 9): " + (
        _md(f"{sc['category']}: {sc['words']} ({sc['article']}), documented in {sc['reference']}, "
            f"reviewed by {sc['reviewed_by']} on {sc['reviewed_on']}") if sc
        else "none: no Art. 9 condition is documented, so no biometric data is kept"))
    L += ["", "### Recipients and transfers", ""]
    if rec["recipients"]:
        L += _md_table(["Recipient", "Role", "Purpose"],
                       [[_md(r["name"]), _md(r["role_words"]), _md(r.get("purpose") or "")] for r in rec["recipients"]])
    else:
        L += ["No recipients are recorded.", ""]
    if rec["transfers"]:
        L += _md_table(["Country", "Recipient", "Safeguard", "Reference"],
                       [[_md(t["country"]), _md(t.get("recipient") or ""), _md(t["safeguard_words"]), _md(t.get("reference") or "")]
                        for t in rec["transfers"]])
    else:
        L += ["No transfers outside the EEA are recorded.", ""]
    L += ["### How long data is kept", ""]
    L += _md_table(["What", "Kept for", "Policy value"],
                   [[_md(_cap(r["what"])), f"**{_md(r['words'])}**", f"{_mdc(r['key'])} = {_mdc(r['period'])}"]
                    for r in rec["retention"]])
    L += ["### Measures the extension enforces (Art. 32)", ""]
    L += [f"- {_md(m)}" for m in rec["security_measures"]]
    L += ["", "## 2. Domains and their terms reviews", ""]
    if not doc["domains"]:
        L += ["No domains are listed: the crawler will not fetch anything.", ""]
    for d in doc["domains"]:
        t = d["terms"]
        L += [f"### {_md(d['domain'])}", "", f"- Status: **{_md(d['status'])}**",
              f"- Subdomains: {'included' if d['include_subdomains'] else 'not included'}",
              f"- Allowed paths: {', '.join(_mdc(p) for p in d['allow_paths']) or 'all'}",
              f"- Denied paths: {', '.join(_mdc(p) for p in d['deny_paths']) or 'none'}",
              f"- Rate limit: {_md(d['rate_limit']['words'])}"]
        if t is None:
            L.append("- Terms review: **none recorded**")
        else:
            L += [f"- Terms: <{t['url']}>",
                  f"- Verdict: **{t['verdict']}** ({_md(t['verdict_words'])})",
                  f"- Conditions: {'; '.join(_md(c) for c in t['conditions']) or 'none'}",
                  f"- Reviewed by {_md(t['reviewed_by'])} on {t['reviewed_on']}",
                  f"- Fingerprint: {_mdc(t['fingerprint']) if t['fingerprint'] else '**none recorded**'}"]
        L.append("")
    h = doc["handling"]
    L += ["## 3. What the crawler does with pages, images and faces", "", "### Pages", ""]
    L += [f"- {_md(x)}" for x in h["pages"]]
    L += ["", "### Images", ""]
    L += [f"- {_md(x)}" for x in h["images"]]
    L += ["", "### Faces", "", f"**{_md(h['faces']['words'])}** {_md(h['faces']['art9'])}", "",
          f"- Action: {_mdc(h['faces']['action'])}",
          f"- Detection sensitivity: {_md(h['faces']['sensitivity_words'])}",
          f"- Margin around a face: {h['faces']['margin']:.0%} of the face size", "",
          "## 4. Opt-out signals honoured", ""]
    L += _md_table(["Signal", "Honoured", "Example"],
                   [[_md(s["signal"]), "yes" if s["honoured"] else "**no**", _mdc(s["example"])] for s in doc["opt_out"]])
    L += ["robots.txt is always obeyed; it cannot be switched off.", "",
          f"Deny lists (domains never contacted, with their subdomains): "
          f"{', '.join(_mdc(d) for d in doc['deny_lists']) or 'none'}", "",
          "Per-purpose robots.txt product tokens (a page is kept for the purpose only when the token may fetch it): "
          + (", ".join(f"{_mdc(t['token'])} ({_md(t['purpose'])})" for t in doc["purpose_tokens"]) or "none"), "",
          "RSL usage types each purpose needs a site's licence to grant: "
          + "; ".join(f"{_md(u['purpose'])}: {', '.join(_mdc(x) for x in u['usage']) or 'none'}"
                      for u in doc["rsl_usage"]), "",
          "RSL licences held: " + (", ".join(
              f"{_mdc(h['document'])} ({_md(', '.join(h['usage']))}; {_md(h['reference'])}, {_md(h['obtained_on'])}"
              + (f" to {_md(h['expires_on'])}" if h["expires_on"] else "") + ")" for h in doc["rsl_licences"])
              or "none"), "",
          "## 5. Excluded jurisdictions", "",
          f"- Top-level domains: {', '.join(_mdc(t) for t in doc['jurisdictions']['exclude_tlds']) or 'none'}",
          f"- Domains: {', '.join(_mdc(t) for t in doc['jurisdictions']['exclude_domains']) or 'none'}"]
    if doc["jurisdictions"]["note"]:
        L.append(f"- Note: {_md(doc['jurisdictions']['note'])}")
    L += ["", "## 6. Objections", "",
          f"Objections and erasure requests are kept in {_mdc(doc['objections']['path'])}; every request and "
          "every record is checked against it."
          + (f" The project's settings also name an objection list, `GDPR_OBJECTIONS = "
             f"{doc['objections']['setting']}`; a crawl with these settings checks that list, which this review "
             "does not cover." if doc["objections"].get("setting") else ""),
          "", "## 7. Checklist of open items", ""]
    if doc["checklist"]:
        L += [f"- [ ] **{i['kind']}** {'line ' + str(i['line']) + ' ' if i['line'] else ''}{(_mdc(i['path']) + ': ') if i['path'] else ''}"
              f"{_md(i['text'])} (fix: {_md(i['fix'])})" for i in doc["checklist"]]
    else:
        L.append("No open items.")
    L += ["", "## 8. Sign-off", "", f"I have reviewed policy {_mdc(pol['id'])} with fingerprint {_mdc(pol['fingerprint'])}.", "",
          "- Decision (approved / approved with conditions / not approved):", "- Conditions:", "- Name:", "- Date:",
          "- Signature:", ""]
    return "\n".join(L)
