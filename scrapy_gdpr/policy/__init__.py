"""The policy file: its model, loading with line numbers, findings and lint rules.

This package imports no crawl component: everything else reads the policy, the
policy reads nothing of theirs.
"""

from __future__ import annotations

from scrapy_gdpr.policy.durations import Duration
from scrapy_gdpr.policy.findings import Finding, PolicyError
from scrapy_gdpr.policy.lint import ART30_RECORDS
from scrapy_gdpr.policy.loader import FIELD_HELP, load_policy, read_policy_text, validate_policy_text
from scrapy_gdpr.policy.model import (
    MAX_DELAY_SECONDS,
    MAX_DEPTH,
    MAX_DURATION_SECONDS,
    MAX_DURATION_YEARS,
    MAX_IMAGE_PIXELS,
    MAX_POLICY_BYTES,
    MAX_ROBOTS_BYTES,
    MAX_VALUES,
    REVIEW_WARNING_DAYS,
    SCHEMA_PATH,
    Art9Condition,
    BiometricBasis,
    Contact,
    Crawler,
    DateField,
    DomainRule,
    FaceAction,
    FacePolicy,
    Fingerprint,
    HeldLicence,
    HostName,
    HttpUrl,
    Identifier,
    IsoDuration,
    Jurisdictions,
    LawfulBasis,
    NonEmpty,
    Objections,
    OptOutSettings,
    Policy,
    Politeness,
    Purpose,
    RateLimit,
    Recipient,
    Retention,
    RobotsSettings,
    RslUsage,
    SignalPurpose,
    SpecialCategories,
    TermsCheck,
    TermsReview,
    Transfer,
    policy_json_schema,
)

__all__ = [
    "ART30_RECORDS", "FIELD_HELP", "MAX_DELAY_SECONDS", "MAX_DEPTH", "MAX_DURATION_SECONDS",
    "MAX_DURATION_YEARS", "MAX_IMAGE_PIXELS", "MAX_POLICY_BYTES", "MAX_ROBOTS_BYTES", "MAX_VALUES",
    "REVIEW_WARNING_DAYS", "SCHEMA_PATH", "Art9Condition", "BiometricBasis", "Contact", "Crawler",
    "DateField", "DomainRule", "Duration", "FaceAction", "FacePolicy", "Finding", "Fingerprint",
    "HeldLicence", "HostName", "HttpUrl", "Identifier", "IsoDuration", "Jurisdictions", "LawfulBasis", "NonEmpty",
    "Objections", "OptOutSettings", "Policy", "PolicyError", "Politeness", "Purpose", "RateLimit",
    "Recipient", "Retention", "RobotsSettings", "RslUsage", "SignalPurpose", "SpecialCategories", "TermsCheck",
    "TermsReview", "Transfer", "load_policy", "policy_json_schema", "read_policy_text",
    "validate_policy_text",
]
