"""The IPTC / PLUS "Data Mining" property inside images and documents (XMP).

The IPTC Photo Metadata Standard (2023.1 and later) records whether an image may be
used for data mining, with the PLUS Coalition's ``plus:DataMining`` property in XMP
(namespace ``http://ns.useplus.org/ldf/xmp/1.0/``), valued from the PLUS LDF
vocabulary (``http://ns.useplus.org/ldf/vocab/DMI-...``). IPTC-IIM (the older
binary record in a JPEG's APP13 segment) has no data-mining dataset: the property
exists in XMP only, so XMP is what is read.

:func:`read_data_mining` finds every XMP packet in the raw bytes (JPEG APP1, PNG
``iTXt``, WebP, TIFF, GIF, PDF metadata streams all embed it as text), parses the
ones that name ``DataMining`` with lxml (no entities, no network) and returns the
values. The opt-out middleware maps them to purposes before any pipeline (and so
before the face stage, which strips all metadata) sees the bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

PLUS_NS = "http://ns.useplus.org/ldf/xmp/1.0/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
VOCAB = "http://ns.useplus.org/ldf/vocab/"

ALL = ("search", "ai-train", "ai-input")
#: PLUS Data Mining values and the opt-out purposes each reserves.
DMI_PURPOSES: dict[str, tuple[str, ...]] = {
    "DMI-UNSPECIFIED": (),
    "DMI-ALLOWED": (),
    "DMI-PROHIBITED-AIMLTRAINING": ("ai-train",),
    "DMI-PROHIBITED-GENAIMLTRAINING": ("ai-train",),  # generative training is training
    "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING": ("ai-train", "ai-input"),
    "DMI-PROHIBITED": ALL,
    # prohibited, with conditions written elsewhere that a crawler cannot read: prohibited
    "DMI-PROHIBITED-SEECONSTRAINT": ALL,
    "DMI-PROHIBITED-SEEEMBEDDEDRIGHTSEXPR": ALL,
    "DMI-PROHIBITED-SEELINKEDRIGHTSEXPR": ALL,
}

_MARK = b"DataMining"
_MARK_UTF16 = ("DataMining".encode("utf-16-le"), "DataMining".encode("utf-16-be"))
_PACKET = re.compile(rb"<x:x[am]pmeta\b.*?</x:x[am]pmeta\s*>|<rdf:RDF\b.*?</rdf:RDF\s*>", re.DOTALL)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_comments=True)


@dataclass
class DataMining:
    """What the XMP of one body says: the values found, and what could not be read."""

    values: list[str] = field(default_factory=list)  # DMI-... codes, upper case
    problems: list[str] = field(default_factory=list)


def _code(value: str) -> str:
    value = value.strip()
    value = value.removeprefix(VOCAB)
    return value.upper()


def _values(root: etree._Element) -> tuple[list[str], list[str]]:
    values: list[str] = []
    problems: list[str] = []
    attr = f"{{{PLUS_NS}}}DataMining"
    for el in root.iter():
        if attr in el.attrib:
            values.append(_code(el.attrib[attr]))
        if el.tag == attr:
            text = (el.text or "").strip() or el.get(f"{{{RDF_NS}}}resource", "").strip()
            if not text:  # rdf:Description / rdf:value wrappers: the first text inside
                text = next((t.strip() for t in el.itertext() if t.strip()), "")
            if text:
                values.append(_code(text))
            else:
                problems.append("plus:DataMining without a value")
    return values, problems


def read_data_mining(body: bytes) -> DataMining:
    """The ``plus:DataMining`` values of every XMP packet in ``body``.

    A packet naming DataMining that cannot be parsed, a DataMining outside the PLUS
    namespace, or one outside any readable packet (UTF-16 XMP included) is a problem:
    callers treat it as a reservation of every purpose, in doubt.
    """
    out = DataMining()
    if _MARK not in body:
        if any(m in body for m in _MARK_UTF16):
            out.problems.append("an XMP packet in UTF-16 names DataMining; not read")
        return out
    for match in _PACKET.finditer(body):
        packet = match.group(0)
        if _MARK not in packet:
            continue
        try:
            root = etree.fromstring(packet, _PARSER)
        except etree.XMLSyntaxError as exc:
            out.problems.append(f"an XMP packet naming DataMining cannot be parsed ({exc})")
            continue
        values, problems = _values(root)
        out.values.extend(values)
        out.problems.extend(problems)
        if not values and not problems:
            out.problems.append("DataMining is named outside the PLUS namespace " + PLUS_NS)
    if not out.values and not out.problems:
        out.problems.append("DataMining is named outside a readable XMP packet")
    return out
