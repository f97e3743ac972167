"""The C2PA / CAWG training-and-mining assertion in a Content Credentials manifest.

A C2PA manifest embedded in an image (or a PDF, a video...) may carry the
``cawg.training-mining`` assertion (``c2pa.training-mining`` in C2PA 1.x), whose
``entries`` say, per use, ``allowed``, ``notAllowed`` or ``constrained``::

    {"entries": {"cawg.ai_training": {"use": "notAllowed"},
                 "cawg.ai_generative_training": {"use": "notAllowed"},
                 "cawg.ai_inference": {"use": "allowed"},
                 "cawg.data_mining": {"use": "constrained", "constraint_info": "..."}}}

:func:`read_training_mining` reads the manifest store with ``c2pa-python`` (the
C2PA SDK), without any network access (remote manifests and OCSP are never
fetched), and returns what each entry reserves. The signature's trust is not
required: a reservation is honoured whoever signed it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

LABELS = ("cawg.training-mining", "c2pa.training-mining")
#: Entry names (without their ``cawg.``/``c2pa.`` prefix) and the opt-out purposes each covers.
ENTRY_PURPOSES: dict[str, tuple[str, ...]] = {
    "ai_training": ("ai-train",),
    "ai_generative_training": ("ai-train",),
    "ai_inference": ("ai-input",),
    "data_mining": ("ai-train", "ai-input"),  # text and data mining, as TDMRep
}
ALL = ("search", "ai-train", "ai-input")
_SETTINGS = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"%PDF", "application/pdf"),
)


@dataclass
class TrainingMining:
    """Reservations found in a manifest store: (purposes, text), and what could not be read."""

    reservations: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _format(body: bytes, mime: str | None) -> str | None:
    for magic, kind in _MAGIC:
        if body.startswith(magic):
            return kind
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    if body[4:8] == b"ftyp":
        return "image/avif" if body[8:12] in (b"avif", b"avis") else "image/heif"
    return mime


def read_training_mining(body: bytes, mime: str | None = None) -> TrainingMining:
    """The training-and-mining reservations of the C2PA manifest embedded in ``body``."""
    out = TrainingMining()
    if b"c2pa" not in body:  # the JUMBF label of every manifest store
        return out
    try:
        import c2pa
    except ImportError as exc:  # pragma: no cover - a dependency
        out.problems.append(f"a C2PA manifest may be present, but c2pa-python cannot be imported ({exc})")
        return out
    kind = _format(body, mime)
    try:
        context = c2pa.Context(c2pa.Settings.from_dict(_SETTINGS))
        reader = c2pa.Reader(kind, io.BytesIO(body), context=context)
        store: dict[str, Any] = json.loads(reader.json())
    except (c2pa.C2paError, ValueError) as exc:
        # without a JUMBF box, "c2pa" was a chance byte sequence: no manifest. With one,
        # a manifest store is there but cannot be read (damaged, or a format the SDK
        # does not read): the caller reserves every purpose, in doubt
        if b"jumb" in body:
            out.problems.append(f"a C2PA manifest store is present but cannot be read ({kind or 'unknown format'}: "
                                f"{str(exc)[:200]})")
        return out
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest") or "") or {}
    for assertion in active.get("assertions") or []:
        if not isinstance(assertion, dict) or assertion.get("label") not in LABELS:
            continue
        entries = (assertion.get("data") or {}).get("entries")
        if not isinstance(entries, dict):
            out.problems.append(f"{assertion.get('label')} without entries")
            continue
        for name, entry in entries.items():
            key = str(name).split(".", 1)[-1]
            purposes = ENTRY_PURPOSES.get(key)
            if purposes is None:
                continue  # a use this project does not serve
            use = entry.get("use") if isinstance(entry, dict) else None
            if use == "allowed":
                continue
            if use in ("notAllowed", "constrained"):
                out.reservations.append((purposes, f"C2PA {assertion['label']}: {name} {use}"))
            else:
                out.problems.append(f"{assertion['label']}: {name} has use {use!r}, not allowed/notAllowed/constrained")
                out.reservations.append((purposes, (f"C2PA {assertion['label']}: {name} use {use!r} unreadable: "
                                                   "reserved, in doubt")))
    return out
