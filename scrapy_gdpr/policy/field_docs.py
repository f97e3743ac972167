"""Descriptions of the policy fields that the model does not describe itself.

:func:`scrapy_gdpr.policy.policy_json_schema` adds them to the published JSON Schema
(``policy.schema.json``), which editors show and ``scrapy gdpr-lint --explain KEY``
prints, so that a user of the installed package has every field's documentation.
A description written on the model's field takes precedence.
"""

from __future__ import annotations

#: (model name, field) -> description.
FIELD_DOCS: dict[tuple[str, str], str] = {
    ("Policy", "version"): "The policy file format version; always 1",
    ("Policy", "policy_id"): "A short id for this policy, stamped on everything stored (lower case, digits, '_.-')",
    ("Policy", "title"): "A title for people reading the review document",
    ("Policy", "controller"): "The controller (Art. 4(7)): who decides why and how the data is processed",
    ("Policy", "representative"): "The controller's representative in the EU (Art. 27), where one is required",
    ("Policy", "dpo"): "The data protection officer (Art. 37), where one is designated",
    ("Policy", "crawler"): "How the crawler identifies itself to sites",
    ("Policy", "purposes"): "The purposes of processing, each with its Art. 6 lawful basis and review (at least one)",
    ("Policy", "special_categories"): "Conditions for special categories of data (Art. 9), e.g. biometric data",
    ("Policy", "data_subjects"): "Categories of data subjects (Art. 30(1)(c)), e.g. site_authors, bystanders; "
    "required by 'gdpr-lint --strict'",
    ("Policy", "data_categories"): "Categories of personal data (Art. 30(1)(c)), e.g. user.name, "
    "user.content.self_image; required by 'gdpr-lint --strict'",
    ("Policy", "recipients"): "Categories of recipients (Art. 30(1)(d)); write 'recipients: []' when there are none "
    "(required by 'gdpr-lint --strict')",
    ("Policy", "transfers"): "Transfers to third countries and their safeguards (Art. 30(1)(e), Art. 44-49)",
    ("Policy", "domains"): "The domains the spider may crawl, each with its terms review; every other host is refused",
    ("Policy", "terms_check"): "How often the reviewed terms pages are checked for changes",
    ("Policy", "robots"): "robots.txt handling (RFC 9309)",
    ("Policy", "opt_out"): "Which opt-out signals are honoured",
    ("Policy", "jurisdictions"): "Jurisdictions never crawled",
    ("Policy", "faces"): "What the face stage does with faces in images",
    ("Policy", "retention"): "How long stored data, logs and caches are kept (ISO 8601 durations)",
    ("Policy", "objections"): "Where the list of objections and erasures is kept",
    ("Policy", "politeness"): "Default delays and concurrency per site",
    ("Contact", "name"): "Name of the person or organisation",
    ("Contact", "email"): "E-mail address",
    ("Contact", "url"): "Web address (http or https)",
    ("Contact", "address"): "Postal address",
    ("Contact", "phone"): "Telephone number",
    ("Purpose", "id"): "A short id for the purpose (lower case, digits, '_.-')",
    ("Purpose", "description"): "What the data is used for, in plain words",
    ("Purpose", "lawful_basis"): "The Art. 6(1) lawful basis: consent (a), contract (b), legal_obligation (c), "
    "vital_interests (d), public_task (e), legitimate_interests (f)",
    ("Purpose", "reviewed_by"): "Who reviewed the lawful basis",
    ("Purpose", "reviewed_on"): "When the lawful basis was reviewed (YYYY-MM-DD)",
    ("Purpose", "review_due"): "When the lawful basis must be reviewed again (YYYY-MM-DD); the crawl refuses to "
    "start once it is overdue",
    ("BiometricBasis", "condition"): "The Art. 9(2) condition relied on",
    ("BiometricBasis", "reviewed_by"): "Who reviewed the condition",
    ("BiometricBasis", "reviewed_on"): "When the condition was reviewed (YYYY-MM-DD)",
    ("SpecialCategories", "biometric"): "The Art. 9(2) condition for keeping faces unredacted; without it "
    "faces.action cannot be keep",
    ("Recipient", "name"): "Who receives the data (a name or a category)",
    ("Recipient", "role"): "Their role: processor, controller, joint_controller or public",
    ("Recipient", "purpose"): "What they receive it for",
    ("Transfer", "country"): "The third country the data goes to",
    ("Transfer", "recipient"): "Who receives it there",
    ("Transfer", "safeguard"): "The safeguard (Art. 45-49)",
    ("Transfer", "reference"): "Where the safeguard is documented",
    ("TermsReview", "url"): "The terms-of-use page that was reviewed; with verdict none_published, the address "
    "where terms would be published (watched: a page appearing there refuses the domain until reviewed again)",
    ("TermsReview", "verdict"): "What the terms say about crawling: permits, forbids or conditional; "
    "none_published when the reviewer checked that the site publishes no terms of use",
    ("TermsReview", "candidates"): "With verdict none_published: more addresses where terms would appear, "
    "watched like url",
    ("TermsReview", "conditions"): "The conditions the reviewer attached (needed for a conditional verdict)",
    ("TermsReview", "reviewed_on"): "When the terms were reviewed (YYYY-MM-DD)",
    ("TermsReview", "reviewed_by"): "Who reviewed the terms",
    ("RateLimit", "concurrency"): "Requests in flight to the host at most (1-64)",
    ("DomainRule", "domain"): "The host name (no scheme, no path), e.g. example.org",
    ("DomainRule", "include_subdomains"): "Whether sub-domains of the host are covered too",
    ("DomainRule", "terms"): "The review of the site's terms of use; a domain without one is not crawled",
    ("DomainRule", "deny_paths"): "Path prefixes never crawled on this host",
    ("DomainRule", "rate_limit"): "A delay and concurrency for this host instead of the politeness defaults",
    ("TermsCheck", "interval"): "How often a reviewed terms page is fetched again to detect changes",
    ("RobotsSettings", "cache_ttl"): "How long a robots.txt is cached",
    ("RobotsSettings", "max_size"): "Bytes of robots.txt read at most (at least 500 KiB, RFC 9309)",
    ("RobotsSettings", "max_redirects"): "Redirects followed for robots.txt (5-20)",
    ("RobotsSettings", "retry_times"): "Retries of an unreachable robots.txt before the host is refused",
    ("RobotsSettings", "retry_backoff"): "How long an unreachable robots.txt is not asked again",
    ("RobotsSettings", "max_crawl_delay"): "The longest Crawl-delay honoured; a longer one refuses the host",
    ("OptOutSettings", "x_robots_tag"): "Honour X-Robots-Tag response headers",
    ("OptOutSettings", "meta_robots"): "Honour <meta name=robots> tags",
    ("OptOutSettings", "tdmrep"): "Honour the TDM Reservation Protocol (tdm-reservation headers, tdmrep.json)",
    ("OptOutSettings", "content_signal"): "Honour Content-Signal (robots.txt lines and the response header)",
    ("OptOutSettings", "payment_required"): "Refuse HTTP 402 Payment Required answers (pay-per-crawl), never retried",
    ("OptOutSettings", "deny_lists"): "Files of domains never crawled (one per line, '#' comments), relative to the policy file",
    ("OptOutSettings", "content_usage"): "Honour Content-Usage preferences",
    ("Jurisdictions", "exclude_tlds"): "Top-level domains never crawled, e.g. [cn, ru]",
    ("Jurisdictions", "exclude_domains"): "Hosts never crawled",
    ("Jurisdictions", "note"): "Why these jurisdictions are excluded",
    ("FacePolicy", "action"): "What happens to an image with faces: blur, pixelate, fill, drop_image, drop_item, "
    "or keep (keep needs special_categories.biometric)",
    ("FacePolicy", "margin"): "How far beyond each face box the redaction reaches, as a share of the box (0-2)",
    ("FacePolicy", "sensitivity"): "Detector profile: strict (most faces found), balanced or fast",
    ("FacePolicy", "min_confidence"): "Detector confidence threshold (0-1, exclusive); default: the profile's",
    ("FacePolicy", "max_pixels"): "Images larger than this many pixels are refused, not decoded",
    ("Retention", "items"): "How long items are kept, per item type (class name) or 'default'",
    ("Retention", "images"): "How long stored images are kept",
    ("Retention", "files"): "How long stored files are kept",
    ("Retention", "logs"): "How long audit logs and reports are kept",
    ("Retention", "caches"): "How long caches (robots.txt, terms, HTTP cache) are kept",
    ("Politeness", "default_concurrency"): "Requests in flight per site at most (1-64)",
    ("Politeness", "retry_after_max"): "The longest Retry-After wait honoured; a longer one refuses the host",
}


def add_descriptions(schema: dict[str, object]) -> None:
    """Add :data:`FIELD_DOCS` to ``schema`` where a field has no description."""
    models: dict[str, object] = {"Policy": schema, **dict(schema.get("$defs", {}))}  # type: ignore[call-overload]
    for (model, field), text in FIELD_DOCS.items():
        node = models.get(model)
        props = node.get("properties", {}) if isinstance(node, dict) else {}
        if isinstance(props, dict) and isinstance(props.get(field), dict):
            prop = props[field]
            existing = prop.get("description")
            if isinstance(existing, str) and existing.startswith("ISO 8601 duration"):
                prop["description"] = f"{text} ({existing})"  # the type's words, after the field's
            else:
                prop.setdefault("description", text)
