"""The per-spider policy file: its model (pydantic), limits and JSON Schema.

A policy file is YAML written for a privacy officer.
:func:`~scrapy_gdpr.policy.loader.load_policy` reads it, validates it against the model below (published as JSON Schema in
``scrapy_gdpr/policy.schema.json``) and against the rules a schema cannot express
(faces kept only with an Art. 9 condition, reviews not overdue, no domain listed
twice, in :mod:`~scrapy_gdpr.policy.lint`), and raises
:class:`~scrapy_gdpr.policy.findings.PolicyError` listing *every* finding with the file, the
line, the key path, what is wrong and how to fix it.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from scrapy_gdpr.policy.durations import Duration
from scrapy_gdpr.policy.findings import Finding, _format_path, _line_for

__all__ = [
    "Policy",
    "policy_json_schema",
]

SCHEMA_PATH = Path(__file__).parent.parent / "policy.schema.json"
#: The most values (mappings, lists, scalars) a policy file may expand to; real
#: policies have a few hundred. Protects lint and crawl start-up from alias bombs.
MAX_VALUES = 100_000
REVIEW_WARNING_DAYS = 30
#: The largest policy file read (real policies are a few kilobytes); larger files,
#: and anything that is not a regular file (a FIFO, a device), are refused unread.
MAX_POLICY_BYTES = 1024 * 1024
#: The deepest nesting of sections and lists a policy may have (real ones: 5).
MAX_DEPTH = 32
#: The longest period a policy may name (retention, review intervals, TTLs).
MAX_DURATION_YEARS = 100
MAX_DURATION_SECONDS = MAX_DURATION_YEARS * 365 * 86400
#: Upper bounds of the policy's numbers (all numbers must also be finite).
MAX_DELAY_SECONDS = 3600.0
MAX_IMAGE_PIXELS = 500_000_000
MAX_ROBOTS_BYTES = 50_000_000


# --------------------------------------------------------------------------- findings


# --------------------------------------------------------------------------- field types


def _invalid(message: str, fix: str) -> PydanticCustomError:
    """A validation error carrying its own fix (shown as ``(fix: ...)``)."""
    return PydanticCustomError("policy_value", "{message}", {"message": message, "fix": fix})


def _check_duration(value: Any) -> str:
    try:
        duration = Duration.parse(value)
        too_long = duration.total_seconds() > MAX_DURATION_SECONDS
    except (ValueError, OverflowError) as exc:
        raise _invalid(str(exc), "write an ISO 8601 duration: P30D (30 days), P6M (6 months), P1Y (a year), PT24H (24 hours)") from None
    if too_long:
        raise _invalid(f"{value!r} is longer than {MAX_DURATION_YEARS} years",
                       f"write a period of at most {MAX_DURATION_YEARS} years (P{MAX_DURATION_YEARS}Y)")
    return str(value).strip().upper()


IsoDuration = Annotated[
    str,
    # before: a bare number (``30``) gets the duration message, not "not a string"
    BeforeValidator(_check_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$",
            "description": "ISO 8601 duration, e.g. P30D, P6M, PT24H",
        }
    ),
]

_HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*\.?$")


def _check_host(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    if "://" in host or "/" in host:
        raise _invalid(f"{value!r} is a URL, not a host name", "give the host name only, e.g. 'example.org'")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not _HOST_RE.match(host):
            raise _invalid(f"{value!r} is not a valid host name", "give a host name such as 'example.org'") from None
    return host


HostName = Annotated[str, AfterValidator(_check_host)]


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise _invalid(f"{value!r} is not an absolute http(s) URL", "write the full address, e.g. 'https://example.org/terms'")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_url)]


def _check_fingerprint(value: str) -> str:
    if not re.match(r"^sha256:[0-9a-f]{64}$", value):
        raise _invalid(
            f"{value!r} is not a fingerprint of the form sha256:<64 hex digits>",
            "run 'scrapy gdpr-terms URL' and copy the fingerprint it prints",
        )
    return value


Fingerprint = Annotated[str, AfterValidator(_check_fingerprint)]

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _check_date_text(value: Any) -> Any:
    # pydantic would also read numbers (Unix time) and date-times as dates; a policy
    # date is a calendar day written as YYYY-MM-DD, nothing else.
    if isinstance(value, date) or (isinstance(value, str) and _DATE_RE.match(value.strip())):
        return value.strip() if isinstance(value, str) else value
    raise _invalid(f"{value!r} is not a date written as YYYY-MM-DD", "write the date as YYYY-MM-DD, e.g. 2026-10-01")


DateField = Annotated[
    date, BeforeValidator(_check_date_text), PlainSerializer(lambda d: d.isoformat(), return_type=str)
]

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]
NonEmpty = Annotated[str, Field(min_length=1)]

LawfulBasis = Literal[
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
]
Art9Condition = Literal[
    "explicit_consent",
    "employment_and_social_security",
    "vital_interests",
    "not_for_profit_body",
    "manifestly_made_public",
    "legal_claims",
    "substantial_public_interest",
    "health_or_social_care",
    "public_health",
    "archiving_research_statistics",
]
SignalPurpose = Literal["search", "ai-train", "ai-input"]
#: RSL 1.0 usage types a purpose can fall under (``all`` and ``ai-all`` are only written by sites).
RslUsage = Literal["search", "ai-index", "ai-train", "ai-input"]
FaceAction = Literal["blur", "pixelate", "fill", "drop_image", "drop_item", "keep"]


def keep_refused(action: object, biometric: object) -> bool:
    """The one rule for keeping faces: ``faces.action: keep`` needs an Art. 9 condition for
    biometric data documented under ``special_categories.biometric``.

    Applied by the lint (on the raw file, so it is reported with its line), by the model
    (``FacePolicy.keep_allowed``) and by the face stage, which refuses to keep faces the
    policy may not keep; nothing turns ``keep`` into another action.
    """
    return action == "keep" and not biometric


class _Model(BaseModel):
    # numbers must be finite: '.inf' or '.nan' in a delay would hang or break the crawl
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


# --------------------------------------------------------------------------- sections


class Contact(_Model):
    """A person or organisation and how to reach them."""

    name: NonEmpty
    email: str | None = None
    url: HttpUrl | None = None
    address: str | None = None
    phone: str | None = None


class Purpose(_Model):
    """A purpose of processing with its Art. 6 lawful basis and its review."""

    id: Identifier
    description: NonEmpty
    lawful_basis: LawfulBasis
    basis_reference: str | None = Field(
        None, description="Where the basis is documented: LIA id for legitimate interests, contract, law"
    )
    dpia_reference: str | None = Field(None, description="DPIA id, where one was carried out")
    reviewed_by: NonEmpty
    reviewed_on: DateField
    review_due: DateField
    signal_purposes: list[SignalPurpose] = Field(
        default_factory=lambda: ["search"],  # type: ignore[arg-type]
        description="Which opt-out purposes (search, ai-train, ai-input) this purpose falls under",
    )
    product_token: Annotated[str, Field(pattern=r"^[A-Za-z_-]+$")] | None = Field(
        None,
        description="A robots.txt product token for this purpose besides crawler.product_token (the "
        "Google-Extended pattern, e.g. ExampleBot-AI): a page is kept for this purpose only when "
        "robots.txt lets this token fetch it",
    )
    rsl_usage: list[RslUsage] | None = Field(
        None,
        description="The RSL licence usage types (search, ai-index, ai-train, ai-input) this purpose falls under; "
        "default: those named like its signal_purposes",
    )

    @property
    def licence_usage(self) -> list[str]:
        """The RSL usage types of this purpose: ``rsl_usage``, else its ``signal_purposes``."""
        return list(self.rsl_usage) if self.rsl_usage is not None else list(self.signal_purposes)


class BiometricBasis(_Model):
    """The Art. 9(2) condition under which faces may be kept unredacted."""

    condition: Art9Condition
    reference: NonEmpty = Field(description="Where the condition is documented (DPIA id, consent record)")
    reviewed_by: NonEmpty
    reviewed_on: DateField


class SpecialCategories(_Model):
    biometric: BiometricBasis | None = None


class Recipient(_Model):
    name: NonEmpty
    role: Literal["processor", "controller", "joint_controller", "public"] = "processor"
    purpose: str | None = None


class Transfer(_Model):
    country: NonEmpty
    recipient: str | None = None
    safeguard: Literal[
        "adequacy_decision",
        "standard_contractual_clauses",
        "binding_corporate_rules",
        "derogation",
        "other",
    ]
    reference: str | None = None


class Crawler(_Model):
    """How the crawler identifies itself."""

    product_token: Annotated[str, Field(pattern=r"^[A-Za-z_-]+$")] = Field(
        description="The robots.txt product token the crawler obeys, e.g. ExampleBot"
    )
    user_agent: NonEmpty = Field(description="The User-Agent header; must contain a contact URL")
    info_url: HttpUrl = Field(description="The public crawler information page (Art. 14 notice)")


class TermsReview(_Model):
    """A person's review of a site's terms of use."""

    url: HttpUrl
    verdict: Literal["permits", "forbids", "conditional", "none_published"]
    candidates: list[HttpUrl] = Field(default_factory=list)
    conditions: list[NonEmpty] = Field(default_factory=list)
    reviewed_on: DateField
    reviewed_by: NonEmpty
    fingerprint: Fingerprint | None = Field(
        None, description="sha256 of the normalised terms text the reviewer read (scrapy gdpr-terms URL)"
    )
    snapshot: str | None = Field(
        None,
        description="The normalised terms text the reviewer read, relative to the policy file "
        "(scrapy gdpr-terms URL --save DIR); the compliance report diffs against it on drift",
    )


class RateLimit(_Model):
    delay: Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS)] = Field(1.0, description="Seconds between requests to the host")
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1


class DomainRule(_Model):
    """A domain the spider may crawl, with its terms review."""

    domain: HostName
    include_subdomains: bool = False
    terms: TermsReview | None = None
    allow_paths: list[str] = Field(default_factory=list, description="Path prefixes; empty means all")
    deny_paths: list[str] = Field(default_factory=list)
    rate_limit: RateLimit | None = None
    allow_private_network: bool = Field(
        False, description="Allow hosts resolving to loopback/private addresses (local test sites only)"
    )


class TermsCheck(_Model):
    interval: IsoDuration = "P1D"


class RobotsSettings(_Model):
    cache_ttl: IsoDuration = "PT24H"
    max_size: Annotated[int, Field(ge=512000, le=MAX_ROBOTS_BYTES)] = 512000
    max_redirects: Annotated[int, Field(ge=5, le=20)] = 5
    retry_times: Annotated[int, Field(ge=0, le=10)] = 2
    retry_backoff: IsoDuration = "PT1M"
    max_crawl_delay: IsoDuration = "PT5M"


class HeldLicence(_Model):
    """A licence the controller holds for content a site licenses with RSL."""

    document: HttpUrl = Field(description="The URL of the site's RSL document, as robots.txt or the page links it")
    usage: list[RslUsage] = Field(min_length=1, description="The usage types the licence grants")
    reference: NonEmpty = Field(description="Where the licence is recorded (contract or order id)")
    obtained_on: DateField = Field(description="The first day the licence is valid (YYYY-MM-DD)")
    expires_on: DateField | None = Field(None, description="The last day the licence is valid; none: no end")


class OptOutSettings(_Model):
    """Which opt-out signals are honoured (all by default)."""

    x_robots_tag: bool = True
    meta_robots: bool = True
    tdmrep: bool = True
    content_signal: bool = True
    content_usage: bool = True
    image_metadata: bool = Field(
        True, description="Honour the IPTC/PLUS Data Mining property (plus:DataMining) in the XMP of images "
        "and documents"
    )
    content_credentials: bool = Field(
        True, description="Honour the C2PA / CAWG training-and-mining assertion in an embedded Content "
        "Credentials manifest (read with c2pa-python, offline)"
    )
    payment_required: bool = Field(
        True, description="Refuse HTTP 402 Payment Required answers (pay-per-crawl), never retrying them"
    )
    deny_lists: list[NonEmpty] = Field(
        default_factory=list,
        description="Files of domains never crawled (with their subdomains), one per line, '#' comments; "
        "relative to the policy file",
    )
    tdmrep_cache_ttl: IsoDuration = Field("PT24H", description="How long a site's /.well-known/tdmrep.json is cached")
    rsl: bool = Field(
        True, description='Honour RSL licences (robots.txt License:, the Link header and <link rel="license"> '
        "naming an RSL document): a purpose the licence prohibits, or one needing a licence not held, is refused"
    )
    rsl_licences: list[HeldLicence] = Field(
        default_factory=list, description="RSL licences held: a usage the site licenses for a fee (or to "
        "registered clients) is allowed only with one of these"
    )
    rsl_cache_ttl: IsoDuration = Field("PT24H", description="How long a fetched RSL document is cached")


class Jurisdictions(_Model):
    exclude_tlds: list[Annotated[str, Field(pattern=r"^\.?[a-z0-9-]+$")]] = Field(default_factory=list)
    exclude_domains: list[HostName] = Field(default_factory=list)
    note: str | None = None


class FacePolicy(_Model):
    action: FaceAction = "blur"
    margin: Annotated[float, Field(ge=0, le=2)] = 0.25
    sensitivity: Literal["strict", "balanced", "fast"] = "strict"
    min_confidence: Annotated[float, Field(gt=0, lt=1)] | None = None
    max_pixels: Annotated[int, Field(gt=0, le=MAX_IMAGE_PIXELS)] = 60_000_000
    max_frames: Annotated[int, Field(ge=1, le=10_000)] = Field(
        100, description="Most frames or pages an animated image or multi-page TIFF may have; more are refused"
    )
    allow_unchecked_types: list[NonEmpty] = Field(
        default_factory=list, description="MIME types that may be stored without a face check"
    )
    image_fields: list[NonEmpty] = Field(
        default_factory=list,
        description="Item fields that carry image bytes (screenshots, ...): checked for faces and kept redacted. "
        "GDPR_IMAGE_BYTES_FIELDS can only add fields; an image in any other field drops the item",
    )

    _keep_allowed: bool = PrivateAttr(False)

    @property
    def keep_allowed(self) -> bool:
        """Whether the policy holding this section documents an Art. 9 condition, so that
        the face stage, given only this section, may honour ``action: keep``."""
        return self._keep_allowed


class Retention(_Model):
    items: dict[NonEmpty, IsoDuration] = Field(
        default_factory=lambda: {"default": "P30D"},
        description="Per item type (class name) or 'default'",
    )
    images: IsoDuration = "P30D"
    files: IsoDuration = "P30D"
    logs: IsoDuration = "P1Y"
    caches: IsoDuration = "P7D"


class Objections(_Model):
    path: NonEmpty = Field("objections.txt", description="Relative to the policy file")
    on_invalid: Literal["refuse", "skip"] = Field(
        "refuse",
        description="A malformed line in the objection list: 'refuse' stops every crawl until it is fixed; "
        "'skip' logs it with its line number and leaves it out",
    )


class Politeness(_Model):
    default_delay: Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS)] = Field(
        1.0, description="Seconds between requests to the same site, unless a domain's rate_limit says otherwise"
    )
    default_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    retry_after_max: IsoDuration = "PT1H"


class Policy(_Model):
    """A spider's policy, as signed off by the privacy officer."""

    version: Literal[1] = 1
    policy_id: Identifier
    title: str | None = None
    controller: Contact
    representative: Contact | None = None
    dpo: Contact | None = None
    crawler: Crawler
    purposes: Annotated[list[Purpose], Field(min_length=1)]
    special_categories: SpecialCategories = SpecialCategories()
    data_subjects: list[NonEmpty] = Field(default_factory=list)
    data_categories: list[NonEmpty] = Field(default_factory=list)
    recipients: list[Recipient] = Field(default_factory=list)
    transfers: list[Transfer] = Field(default_factory=list)
    domains: list[DomainRule] = Field(default_factory=list)
    terms_check: TermsCheck = TermsCheck()
    robots: RobotsSettings = RobotsSettings()
    opt_out: OptOutSettings = OptOutSettings()
    jurisdictions: Jurisdictions = Jurisdictions()
    faces: FacePolicy = FacePolicy()
    retention: Retention = Retention()
    objections: Objections = Objections()
    politeness: Politeness = Politeness()

    _path: Path | None = PrivateAttr(None)
    _fingerprint: str = PrivateAttr("")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)
    _warnings: list[Finding] = PrivateAttr(default_factory=list)

    # -- convenience for components -------------------------------------------------
    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def warnings(self) -> list[Finding]:
        return list(self._warnings)

    def line_of(self, *key_path: Any) -> int | None:
        """The line in the policy file where ``key_path`` (e.g. ``("domains", 0)``) is."""
        return _line_for(self._lines, key_path)

    def clause(self, *key_path: Any) -> str:
        """A citation of a policy clause for the audit log: ``domains[0].terms (line 12)``."""
        text = _format_path(key_path)
        line = self.line_of(*key_path)
        return f"{text} (line {line})" if line else text

    def duration(self, value: str) -> Duration:
        return Duration.parse(value)

    def resolve_path(self, relative: str) -> Path:
        """A path from the policy, relative to the policy file's folder."""
        p = Path(relative)
        if p.is_absolute() or self._path is None:
            return p
        return self._path.parent / p

    def purpose(self, purpose_id: str) -> Purpose | None:
        return next((p for p in self.purposes if p.id == purpose_id), None)

    @property
    def primary_purpose(self) -> Purpose:
        return self.purposes[0]

    def retention_for_item(self, item_type: str) -> Duration:
        items = self.retention.items
        return Duration.parse(items.get(item_type, items.get("default", "P30D")))

    def signal_purposes(self) -> dict[str, int]:
        """The opt-out purposes (search, ai-train, ai-input) the crawl's purposes fall under,
        each with the index of the first purpose naming it, in the policy's order."""
        out: dict[str, int] = {}
        for i, purpose in enumerate(self.purposes):
            for sp in purpose.signal_purposes:
                out.setdefault(sp, i)
        return out

    def faces_may_be_kept(self) -> bool:
        return self.faces.action == "keep" and self.faces.keep_allowed

    def model_post_init(self, context: Any, /) -> None:
        self.faces._keep_allowed = not keep_refused("keep", self.special_categories.biometric)




def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of policy files (what ``policy.schema.json`` holds)."""
    from scrapy_gdpr.policy.field_docs import add_descriptions

    schema = Policy.model_json_schema(mode="validation")
    add_descriptions(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://scrapy-gdpr.invalid/policy.schema.json"
    schema["title"] = "scrapy-gdpr policy file"
    return schema
