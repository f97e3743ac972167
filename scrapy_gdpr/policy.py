"""The per-spider policy file: model, loader, validation and fingerprint.

A policy file is YAML written for a privacy officer. :func:`load_policy` reads it,
validates it against the model below (published as JSON Schema in
``scrapy_gdpr/policy.schema.json``) and against the rules a schema cannot express
(faces kept only with an Art. 9 condition, reviews not overdue, no domain listed
twice), and raises :class:`PolicyError` listing *every* finding with the file, the
line, the key path, what is wrong and how to fix it.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
)

from pydantic_core import PydanticCustomError

from scrapy_gdpr.durations import Duration

__all__ = [
    "Finding",
    "Policy",
    "PolicyError",
    "load_policy",
    "policy_json_schema",
]

SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
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
#: Where a user of the installed package reads about every field.
FIELD_HELP = f"'scrapy gdpr-lint --explain KEY' describes each field; the JSON Schema is {SCHEMA_PATH}"


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One problem found in a policy file."""

    file: str
    line: int | None
    path: str
    message: str
    fix: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}: {self.severity}:{key} {self.message} (fix: {self.fix})"


class PolicyError(ValueError):
    """The policy file is missing or invalid; ``findings`` lists every problem."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        errors = [f for f in findings if f.severity == "error"]
        head = (
            f"Invalid GDPR policy {errors[0].file}: {len(errors)} error(s)"
            if errors
            else "Invalid GDPR policy"
        )
        super().__init__("\n".join([head, *(f"  {f}" for f in errors)]))


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
    return value.strip().upper()


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
        default_factory=lambda: ["search"],
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
        True, description="Honour RSL licences (robots.txt License:, the Link header and <link rel=\"license\"> "
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

    def faces_may_be_kept(self) -> bool:
        return self.faces.action == "keep" and self.special_categories.biometric is not None

    def model_post_init(self, context: Any, /) -> None:
        self.faces._keep_allowed = self.special_categories.biometric is not None


# --------------------------------------------------------------------------- YAML with lines


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: only true/false are booleans, dates stay strings.

    YAML 1.1 reads ``no`` (Norway's country code) as False and ``2026-01-01`` as a date
    object; a policy file must mean what a person reading it sees.
    """


_Loader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """:class:`_Loader`'s rules on libyaml's parser where PyYAML has it (about five
    times faster: a policy at the size limit is refused in seconds, not a minute)."""


_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _yaml_finding(exc: yaml.YAMLError, filename: str) -> Finding:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    if problem.startswith("did not find expected "):
        problem = problem[len("did not find ") :]  # libyaml's wording of PyYAML's message
    if "maximum nesting depth" in problem:
        return _depth_finding(filename, line)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        problem += f" ({context} on line {context_mark.line + 1})"
    return Finding(filename, line, "", f"the file is not valid YAML: {problem}", "correct the YAML syntax at that line")


def _compose(text: str, filename: str) -> tuple[Any, dict[tuple[Any, ...], int], list[Finding]]:
    """Parse YAML to plain data plus a map of key path -> line, noting duplicate keys.

    Every failure is a finding, never an exception: a file too large, a NUL byte,
    nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values.
    """
    findings: list[Finding] = []
    lines: dict[tuple[Any, ...], int] = {}
    if len(text) > MAX_POLICY_BYTES:
        findings.append(Finding(filename, None, "", f"the policy is more than {MAX_POLICY_BYTES:,} characters long",
                                "a policy needs a few kilobytes: check that this is the right file"))
        return None, lines, findings
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        findings.append(Finding(filename, line, "", "the policy contains a NUL byte (it is not a text file)",
                                "save the policy as plain UTF-8 text"))
        return None, lines, findings
    depth_line = _too_deep(text)
    if depth_line is not None:
        findings.append(_depth_finding(filename, depth_line))
        return None, lines, findings
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        findings.append(_yaml_finding(exc, filename))
        return None, lines, findings
    except RecursionError:
        findings.append(_depth_finding(filename, None))
        return None, lines, findings
    finally:
        loader.dispose()
    if node is None:
        return None, lines, findings

    built = 0
    seen_nodes: set[int] = set()
    aliased = False

    def build(n: yaml.Node, path: tuple[Any, ...]) -> Any:
        nonlocal built, aliased
        built += 1
        if id(n) in seen_nodes:
            aliased = True  # a node reached twice: an '*alias'
        seen_nodes.add(id(n))
        if built > MAX_VALUES:
            # '*alias' references can make a small file expand without bound
            raise _TooManyValues(n.start_mark.line + 1)
        if len(path) > MAX_DEPTH:
            raise _TooDeep(n.start_mark.line + 1)
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) and n.tag not in _COLLECTION_TAGS:
            # the safe loader would refuse it; so do we (it is never constructed)
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {n.tag!r}", n.start_mark
            )
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            # ``<<: *anchor`` merge keys first, so that keys written out override them
            for key_node, value_node in n.value:
                if key_node.tag != _MERGE_TAG:
                    continue
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        findings.append(Finding(filename, key_node.start_mark.line + 1, _format_path(path),
                                                "'<<' must refer to a mapping (an '&anchor' on a section)",
                                                "refer to a section, e.g. '<<: *contact'"))
                        continue
                    for key, value in build(source, path).items():
                        out.setdefault(key, value)
            merged = set(out)
            for key_node, value_node in n.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    findings.append(
                        Finding(filename, key_node.start_mark.line + 1, _format_path(path),
                                "a key must be a plain word", "write the key as plain text")
                    )
                    continue
                if key in merged:
                    merged.discard(key)
                elif key in out:
                    findings.append(
                        Finding(
                            filename,
                            key_node.start_mark.line + 1,
                            _format_path((*path, key)),
                            f"key {key!r} appears twice in the same section (first on line {lines[(*path, key)]})",
                            "keep one of the two entries",
                        )
                    )
                    continue
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(child, (*path, i)) for i, child in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    try:
        return build(node, ()), lines, findings
    except _TooManyValues as exc:
        if aliased:
            findings.append(Finding(
                filename, exc.line, "",
                f"the file expands to more than {MAX_VALUES:,} values (through '*alias' references)",
                "write the policy out without nested '&anchor'/'*alias' references; a policy needs far fewer values",
            ))
        else:
            findings.append(Finding(
                filename, exc.line, "", f"the file holds more than {MAX_VALUES:,} values",
                "a policy needs a few hundred values: check that this is the right file",
            ))
        return None, lines, findings
    except _TooDeep as exc:
        findings.append(_depth_finding(filename, exc.line))
        return None, lines, findings
    except RecursionError:
        findings.append(_depth_finding(filename, None))
        return None, lines, findings
    except yaml.YAMLError as exc:
        # e.g. a tag such as '!!python/object' that the safe loader does not construct
        findings.append(_yaml_finding(exc, filename))
        return None, lines, findings
    except (ValueError, OverflowError) as exc:
        # e.g. an integer of thousands of digits (Python's int conversion limit)
        findings.append(Finding(filename, None, "", f"a value cannot be read: {exc}",
                                "write numbers of sensible size, and dates as YYYY-MM-DD"))
        return None, lines, findings


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _depth_finding(filename: str, line: int | None) -> Finding:
    return Finding(filename, line, "", f"sections and lists are nested more than {MAX_DEPTH} levels deep",
                   "a policy nests a few levels: check the indentation and the brackets")


def _too_deep(text: str) -> int | None:
    """The line where flow brackets (``[[[``, ``{{{``) nest deeper than MAX_DEPTH, checked
    before parsing (the YAML parser recurses once per level and would overflow)."""
    depth = 0
    line = 1
    quote = ""
    for ch in text:
        if ch == "\n":
            line += 1
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif ch in "]}" and depth:
            depth -= 1
    return None


class _TooManyValues(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _format_path(path: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...] | list[Any]) -> int | None:
    path = tuple(path)
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]


# --------------------------------------------------------------------------- validation


def _model_for_path(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``path`` (to list its allowed keys)."""
    model: Any = Policy
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        model = _inner_model(info.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args:
        found = _inner_model(arg)
        if found is not None:
            return found
    meta = getattr(annotation, "__origin__", None)
    if meta is not None and isinstance(meta, type) and issubclass(meta, BaseModel):
        return meta
    return None


_FIXES = {
    "missing": "add this key",
    "string_type": "write a text value (quote it if it looks like a number or true/false)",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "float_parsing": "write a number",
    "float_type": "write a number",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "date_from_datetime_parsing": "write the date as YYYY-MM-DD",
    "date_parsing": "write the date as YYYY-MM-DD",
    "date_type": "write the date as YYYY-MM-DD",
    "list_type": "write a list (lines starting with '- ')",
    "dict_type": "write a mapping of 'key: value' lines",
    "model_type": "write a mapping of 'key: value' lines",
    "model_attributes_type": "write a mapping of 'key: value' lines",
    "too_short": "add at least one entry",
    "greater_than_equal": "use a larger value",
    "less_than_equal": "use a smaller value",
    "greater_than": "use a larger value",
    "less_than": "use a smaller value",
    "string_pattern_mismatch": "use only the allowed characters",
    "finite_number": "write a finite number (not .inf or .nan)",
}


#: Plain words for the patterns of the model, used in messages instead of the regex.
_PATTERNS = {
    r"^[a-z0-9][a-z0-9_.-]*$": "lower-case letters, digits, '_', '.' and '-', starting with a letter or digit",
    r"^[A-Za-z_-]+$": "letters, '_' and '-' only (no digits, spaces or '/')",
    r"^\.?[a-z0-9-]+$": "a lower-case top-level domain such as 'cn' or '.cn'",
}


def _fix_for(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if "fix" in ctx:
        return str(ctx["fix"])
    if kind == "extra_forbidden":
        owner = _model_for_path(loc[:-1])
        allowed = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            return f"did you mean '{close[0]}'? allowed keys here: {', '.join(allowed)}"
        return f"remove it; allowed keys here: {', '.join(allowed)}" if allowed else "remove it"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"use one of: {expected}"
    if kind == "value_error":
        return "correct the value as described"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return f"use {_PATTERNS[pattern]}" if pattern in _PATTERNS else f"use a value matching {pattern}"
    return _FIXES.get(kind, "correct the value")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds union-member and validator tags to locations; keep real keys only
    out = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in {"function-after", "str", "none", "lax-or-strict"}):
            continue
        out.append(part)
    return tuple(out)


def _schema_findings(data: Any, lines: dict[tuple[Any, ...], int], filename: str) -> tuple[Policy | None, list[Finding]]:
    try:
        return Policy.model_validate(data), []
    except ValidationError as exc:
        findings = []
        seen = set()
        for err in exc.errors(include_url=False):
            loc = _clean_loc(tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            elif err["type"] == "missing":
                msg = f"required key {loc[-1]!r} is missing"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            elif err["type"] == "string_pattern_mismatch":
                msg = f"{err.get('input')!r} is not in the allowed form"
            elif err["type"] in ("date_parsing", "date_from_datetime_parsing", "date_from_datetime_inexact"):
                reason = msg.split(", ", 1)[1] if ", " in msg else msg
                msg = f"{err.get('input')!r} is not a valid date ({reason})"
            else:
                shown = err["type"] != "policy_value" and "input" in err and not isinstance(err["input"], (dict, list))
                msg = f"{msg} (got {err['input']!r})" if shown else msg
            key = (loc, msg)
            if key in seen:
                continue
            seen.add(key)
            findings.append(Finding(filename, _line_for(lines, loc), _format_path(loc), msg, _fix_for(err, loc)))
        return None, findings


def _as_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


#: Records of processing a policy must keep: key, article, what, how to fix.
ART30_RECORDS = (
    ("data_subjects", "30(1)(c)", "categories of data subjects",
     "list whose data the crawl processes under data_subjects, e.g. [site_authors, bystanders]"),
    ("data_categories", "30(1)(c)", "categories of personal data",
     "list the kinds of personal data under data_categories, e.g. [user.name, user.content.self_image]"),
    ("recipients", "30(1)(d)", "categories of recipients",
     "list who receives the data under recipients (name, role), or write 'recipients: []' if no one does"),
)


def _rule_findings(data: Any, lines: dict[tuple[Any, ...], int], filename: str, today: date) -> list[Finding]:
    """Rules the schema cannot express. Works on raw data so it runs even when the schema fails."""
    if not isinstance(data, dict):
        return []
    out: list[Finding] = []

    def add(path: tuple[Any, ...], message: str, fix: str, severity: Literal["error", "warning"] = "error") -> None:
        out.append(Finding(filename, _line_for(lines, path), _format_path(path), message, fix, severity))

    faces = data.get("faces") if isinstance(data.get("faces"), dict) else {}
    special = data.get("special_categories") if isinstance(data.get("special_categories"), dict) else {}
    has_art9 = bool(special.get("biometric"))
    if faces.get("action") == "keep" and not has_art9:
        add(
            ("faces", "action"),
            "faces are set to be kept, but no Art. 9 condition for biometric data is documented",
            "set faces.action to blur, pixelate, fill, drop_image or drop_item, or document the "
            "condition under special_categories.biometric (condition, reference, reviewed_by, reviewed_on)",
        )

    purposes = data.get("purposes") if isinstance(data.get("purposes"), list) else []
    seen_ids: dict[str, int] = {}
    for i, purpose in enumerate(purposes):
        if not isinstance(purpose, dict):
            continue
        pid = purpose.get("id")
        if isinstance(pid, str):
            if pid in seen_ids:
                add(("purposes", i, "id"), f"purpose {pid!r} is listed twice (first as purposes[{seen_ids[pid]}])",
                    "give each purpose its own id, or merge the two entries")
            seen_ids.setdefault(pid, i)
        due = _as_date(purpose.get("review_due"))
        reviewed = _as_date(purpose.get("reviewed_on"))
        if due is not None and due < today:
            add(
                ("purposes", i, "review_due"),
                f"the lawful-basis review was due on {due.isoformat()} and is overdue",
                "review the lawful basis again, then update reviewed_on and review_due",
            )
        elif due is not None and due <= today + timedelta(days=REVIEW_WARNING_DAYS):
            add(("purposes", i, "review_due"), f"the lawful-basis review is due on {due.isoformat()}",
                "schedule the review before that date", "warning")
        if reviewed is not None and due is not None and reviewed > due:
            add(("purposes", i, "review_due"), "review_due is before reviewed_on", "set review_due after reviewed_on")
        if reviewed is not None and reviewed > today:
            add(("purposes", i, "reviewed_on"), f"reviewed_on {reviewed.isoformat()} is in the future",
                "write the date the review actually took place")
        basis = purpose.get("lawful_basis")
        if basis == "legitimate_interests" and not purpose.get("basis_reference"):
            add(("purposes", i, "lawful_basis"), "legitimate interests are relied on without an LIA reference",
                "record the legitimate interests assessment id in basis_reference", "warning")
        if not purpose.get("dpia_reference") and (faces.get("action") == "keep" or has_art9):
            add(("purposes", i), "biometric data may be processed but no DPIA reference is recorded",
                "record the DPIA id in dpia_reference", "warning")

    domains = data.get("domains") if isinstance(data.get("domains"), list) else []
    seen_domains: dict[str, int] = {}
    for i, rule in enumerate(domains):
        if not isinstance(rule, dict) or not isinstance(rule.get("domain"), str):
            continue
        name = rule["domain"].strip().lower().rstrip(".")
        if name in seen_domains:
            first = seen_domains[name]
            add(
                ("domains", i, "domain"),
                f"domain {name!r} is listed twice (first as domains[{first}], line {_line_for(lines, ('domains', first))})",
                "merge the two entries into one",
            )
        else:
            seen_domains[name] = i
        terms = rule.get("terms")
        if terms is None:
            add(("domains", i), f"domain {name!r} has no terms review, so it will not be crawled",
                "review the site's terms and record them under terms", "warning")
        elif isinstance(terms, dict):
            if terms.get("verdict") in ("permits", "conditional") and not terms.get("fingerprint"):
                add(("domains", i, "terms"), "no fingerprint of the reviewed terms text is recorded, so drift "
                    "cannot be detected and the domain will be refused",
                    "run 'scrapy gdpr-terms URL' and record the fingerprint it prints", "warning")
            if terms.get("verdict") == "none_published" and terms.get("fingerprint"):
                add(("domains", i, "terms", "fingerprint"), "a fingerprint is recorded, but the verdict says the "
                    "site publishes no terms", "remove the fingerprint, or record the reviewer's verdict on the terms")
            if terms.get("candidates") and terms.get("verdict") != "none_published":
                add(("domains", i, "terms", "candidates"), "candidates are watched only with verdict none_published",
                    "remove them, or set the verdict to none_published if the site publishes no terms", "warning")
            if terms.get("verdict") == "conditional" and not terms.get("conditions"):
                add(("domains", i, "terms", "conditions"), "a conditional verdict lists no conditions",
                    "list the conditions the reviewer attached")

    crawler = data.get("crawler") if isinstance(data.get("crawler"), dict) else {}
    ua = crawler.get("user_agent")
    if isinstance(ua, str) and not re.search(r"https?://", ua):
        add(("crawler", "user_agent"), "the User-Agent carries no contact URL",
            "append the crawler information page, e.g. 'ExampleBot/1.0 (+https://example.org/crawler)'")
    token = crawler.get("product_token")
    if isinstance(ua, str) and isinstance(token, str) and token.lower() not in ua.lower():
        add(("crawler", "product_token"), f"the product token {token!r} does not appear in the User-Agent",
            "make the User-Agent start with the product token, e.g. 'ExampleBot/1.0 (+URL)'")
    purposes = data.get("purposes") if isinstance(data.get("purposes"), list) else []
    for i, purpose in enumerate(purposes):
        own = purpose.get("product_token") if isinstance(purpose, dict) else None
        if isinstance(own, str) and isinstance(token, str) and own.lower() == token.lower():
            add(("purposes", i, "product_token"), f"{own!r} is the crawler's own product token, so it adds nothing",
                "name a token of its own for this purpose (e.g. 'ExampleBot-AI'), or remove the key", "warning")

    # Art. 30(1)(c) and (d): records a controller must keep. Warnings (errors under
    # 'gdpr-lint --strict'); an explicit 'recipients: []' records that there are none.
    for key, article, what, fix in ART30_RECORDS:
        value = data.get(key)
        if value is None or (key != "recipients" and value == []):
            add((key,) if key in data else (), f"no {what} recorded (a required record, Art. {article})", fix,
                "warning")

    opt_out = data.get("opt_out") if isinstance(data.get("opt_out"), dict) else {}
    held = opt_out.get("rsl_licences") if isinstance(opt_out.get("rsl_licences"), list) else []
    for i, licence in enumerate(held):
        if not isinstance(licence, dict):
            continue
        obtained, expires = _as_date(licence.get("obtained_on")), _as_date(licence.get("expires_on"))
        if obtained is not None and expires is not None and expires < obtained:
            add(("opt_out", "rsl_licences", i, "expires_on"), "expires_on is before obtained_on",
                "write the licence's last valid day in expires_on")
        elif expires is not None and expires < today:
            add(("opt_out", "rsl_licences", i, "expires_on"),
                f"the licence expired on {expires.isoformat()}: the usage it granted is refused again",
                "renew the licence and update expires_on, or remove the entry", "warning")
        if obtained is not None and obtained > today:
            add(("opt_out", "rsl_licences", i, "obtained_on"),
                f"the licence is valid only from {obtained.isoformat()}: until then it is not used",
                "check the date", "warning")

    retention = data.get("retention") if isinstance(data.get("retention"), dict) else {}
    items = retention.get("items")
    if isinstance(items, dict) and "default" not in items:
        add(("retention", "items"), "no 'default' retention period for item types not listed",
            "add 'default: P30D' (or another period) under retention.items")
    return out


def _fingerprint(policy: Policy) -> str:
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validate_policy_text(text: str, filename: str = "<policy>", *, today: date | None = None) -> tuple[Policy | None, list[Finding]]:
    """Validate policy YAML; return the policy (or None) and every finding (errors and warnings)."""
    today = today or date.today()
    data, lines, findings = _compose(text, filename)
    if data is None and not findings:
        findings.append(Finding(filename, 1, "", "the policy file is empty", f"start from the example policy of the scrapy-gdpr documentation ({FIELD_HELP})"))
    if findings and data is None:
        return None, findings
    if not isinstance(data, dict):
        findings.append(Finding(filename, 1, "", "the policy must be a mapping of 'key: value' lines",
                                f"start from the example policy of the scrapy-gdpr documentation ({FIELD_HELP})"))
        return None, findings
    policy, schema_findings = _schema_findings(data, lines, filename)
    findings += schema_findings
    findings += _rule_findings(data, lines, filename, today)
    findings.sort(key=lambda f: (f.line or 0, f.severity))
    if any(f.severity == "error" for f in findings):
        return None, findings
    assert policy is not None
    policy._lines = lines
    policy._warnings = [f for f in findings if f.severity == "warning"]
    policy._fingerprint = _fingerprint(policy)
    return policy, findings


def read_policy_text(path: Path) -> str:
    """The text of a policy file; raise :class:`PolicyError` (a finding) when it is not
    a regular file, larger than :data:`MAX_POLICY_BYTES`, or not UTF-8 text.

    Opened without blocking and checked on the open file, so a FIFO, a device such
    as ``/dev/zero`` or a folder is refused without being read.
    """
    name = str(path)

    def fail(message: str, fix: str) -> PolicyError:
        return PolicyError([Finding(name, None, "", message, fix)])

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise fail(
            "the policy file does not exist",
            f"create it ({FIELD_HELP}), or point GDPR_POLICY (or the spider's gdpr_policy) at the right "
            "file; a relative path is relative to the project folder (where scrapy.cfg is)",
        ) from None
    except IsADirectoryError:
        raise fail("the policy path is a folder, not a file", "point GDPR_POLICY at the policy's YAML file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise fail(f"the policy file cannot be opened: {exc}", "check the path and its permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise fail("the policy path is not a regular file (a FIFO, device, socket or folder)",
                       "point GDPR_POLICY at the policy's YAML file")
        if info.st_size > MAX_POLICY_BYTES:
            raise fail(f"the policy file is {info.st_size:,} bytes, more than the {MAX_POLICY_BYTES:,} allowed",
                       "a policy needs a few kilobytes: check that this is the right file")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise fail(f"the policy file cannot be read: {exc}", "check the path and its permissions") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_POLICY_BYTES:
        raise fail(f"the policy file is more than {MAX_POLICY_BYTES:,} bytes",
                   "a policy needs a few kilobytes: check that this is the right file")
    try:
        # utf-8-sig: editors on Windows may save a byte-order mark
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError([Finding(name, line, "", f"the policy file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                                   "save the file as UTF-8")]) from None
    return text


def load_policy(path: str | Path, *, today: date | None = None) -> Policy:
    """Load and validate a policy file; raise :class:`PolicyError` listing every error."""
    path = Path(path)
    text = read_policy_text(path)
    policy, findings = validate_policy_text(text, str(path), today=today)
    if policy is None:
        raise PolicyError(findings)
    policy._path = path.resolve()
    return policy


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of policy files (what ``policy.schema.json`` holds)."""
    from scrapy_gdpr.policy_docs import add_descriptions

    schema = Policy.model_json_schema(mode="validation")
    add_descriptions(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://scrapy-gdpr.invalid/policy.schema.json"
    schema["title"] = "scrapy-gdpr policy file"
    return schema
