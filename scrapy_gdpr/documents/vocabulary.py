"""The words the review document and the information page use for the policy's values.
"""

from __future__ import annotations

from typing import Any

from scrapy_gdpr.policy.durations import Duration

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
    ("rsl", ('RSL licences (robots.txt License:, Link header, <link rel="license">, inline): prohibited or '
     "unlicensed uses refused"), "License: https://example.org/license.xml"),
]


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


def _contact_line(contact: dict[str, Any] | None) -> str:
    if not contact:
        return ""
    parts = [contact["name"]]
    parts += [contact[k] for k in ("email", "phone", "url", "address") if contact.get(k)]
    return ", ".join(parts)


def margin_words(margin: float) -> str:
    """The margin around a face as the redaction applies it (a small face gets a wider one)."""
    from scrapy_gdpr.faces import SMALL_FACE_HEIGHT, SMALL_FACE_MARGIN

    words = f"{margin:.0%} of the face size"
    if 0 < margin < SMALL_FACE_MARGIN:
        words += f" ({SMALL_FACE_MARGIN:.0%} for faces under {SMALL_FACE_HEIGHT:.0f} px high)"
    return words
