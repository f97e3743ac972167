"""Images carried inside items (bytes, data: URLs, base64) through the face stage.

:class:`ImageBytesPipeline` (item pipeline at 40) replaces every image value of an item by
its checked, redacted, metadata-free rendition, or drops the item as the policy says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from itemadapter import ItemAdapter

from scrapy_gdpr.audit import Reason, drop
from scrapy_gdpr.items.provenance import provenance_of
from scrapy_gdpr.media.facestage import _FaceStageMixin

if TYPE_CHECKING:

    from typing import Self

    from scrapy.crawler import Crawler


class ImageBytesPipeline(_FaceStageMixin):
    """Runs the face stage on image bytes carried in item fields.

    The fields are named by the policy's ``faces.image_fields`` and by
    ``GDPR_IMAGE_BYTES_FIELDS`` (default ``image_bytes`` and ``screenshot``), which
    can only add to them; an image in any other field drops the item. A field may hold bytes or a list of bytes; each value is
    replaced by the stage's redacted, metadata-free output. The item is dropped
    when an image cannot be checked or the policy does not let it be stored.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._setup_faces(crawler)
        # The policy's fields, then the ones the setting adds: a field can only be
        # added (an image in any field not listed drops the item).
        policy_fields = getattr(self.runtime.policy.faces, "image_fields", [])
        self.fields: tuple[str, ...] = tuple(dict.fromkeys([*policy_fields, *self.runtime.config.image_bytes_fields]))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        await self._refuse_unlisted_images(item, adapter)
        records: list[dict[str, Any]] = []
        for name in self.fields:
            value = adapter.get(name)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                new = [await self._check_value(item, name, v, records) for v in value]
                adapter[name] = type(value)(new)
            else:
                adapter[name] = await self._check_value(item, name, value, records)
        self._note(item, records)
        return item

    async def _check_value(self, item: Any, field: str, value: Any, records: list[dict[str, Any]]) -> bytes:
        source = self._source(item)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            self.faces.count_dropped("not_bytes")
            detail = f"field {field!r} holds {type(value).__name__}, not image bytes"
            self.faces.count_item_dropped(Reason.UNCHECKED)
            raise drop(self.runtime, source, Reason.UNCHECKED, clause=self._clause(Reason.UNCHECKED), detail=detail)
        verdict = await self.faces.check(bytes(value))
        self.faces.count_checked(verdict)
        if self._refused(verdict):
            # One audit line, for the item: the image has no URL of its own.
            reason = self._reason(verdict)
            self.faces.count_dropped(verdict.reason or str(reason))
            record = self.faces.record(verdict, field=field)
            record["stored"] = False
            records.append(record)
            self._note(item, records)
            self.faces.count_item_dropped(reason)
            raise drop(
                self.runtime, source, reason, clause=self._clause(reason),
                detail=f"image in field {field!r} not stored: {verdict.reason}",
            )
        self.faces.count_stored(verdict)
        records.append(self.faces.record(verdict, field=field))
        return verdict.data

    async def _refuse_unlisted_images(self, item: Any, adapter: ItemAdapter) -> None:
        """Fail closed on an image in a field the stage was not told about.

        Image bytes (or a ``data:`` URL or base64 text of an image) in any other
        field, at any depth, would reach the feeds and stores unchecked: the item
        is dropped (reason ``unchecked``), since its shape says the field belongs
        to it. List the field in the policy's ``faces.image_fields`` (or in
        ``GDPR_IMAGE_BYTES_FIELDS``) to have it checked.
        """
        listed = set(self.fields)
        candidates: list[tuple[str, Any]] = []
        for name, value in adapter.items():
            if name not in listed and _walk(value, str(name), candidates):
                self._drop_unchecked(item, f"field {name!r} is too large or too deeply nested to be checked for images")
        if not candidates:
            return
        found = await self.faces.call(_first_image, candidates)
        if found is not None:
            where, mime = found
            self._drop_unchecked(
                item, f"field {where!r} holds an image ({mime}) that is not checked for faces: list the "
                      "field in the policy's faces.image_fields (or GDPR_IMAGE_BYTES_FIELDS) to have it checked",
                stat="unlisted_field",
            )

    def _drop_unchecked(self, item: Any, detail: str, stat: str = "unchecked") -> NoReturn:
        self.faces.count_dropped(stat)
        self.faces.count_item_dropped(Reason.UNCHECKED)
        raise drop(self.runtime, self._source(item), Reason.UNCHECKED, clause=self._clause(Reason.UNCHECKED),
                   detail=detail)

    def _source(self, item: Any) -> str:
        provenance = provenance_of(self.crawler, item)
        return provenance.url if provenance is not None else ""


#: How deep and how many values :class:`ImageBytesPipeline` looks through in the
#: other fields of an item; an item beyond that cannot be checked and is dropped.
_MAX_DEPTH = 32
_MAX_VALUES = 100_000


def _walk(value: Any, path: str, out: list[tuple[str, Any]], depth: int = 0) -> bool:
    """Collect the bytes and long strings under ``value``; True when too deep or too many."""
    if isinstance(value, (bytes, bytearray, memoryview)) or (isinstance(value, str) and len(value) >= 16):
        out.append((path, value))
        return len(out) > _MAX_VALUES
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        try:
            adapted = ItemAdapter(value) if ItemAdapter.is_item(value) else None
        except Exception:  # noqa: BLE001 - not an item ItemAdapter can read
            adapted = None
        if adapted is None:
            return False
        items = ((f"{path}.{k}", v) for k, v in adapted.items())
    if depth >= _MAX_DEPTH:
        return True
    return any(_walk(v, p, out, depth + 1) for p, v in items)


def _first_image(candidates: list[tuple[str, Any]]) -> tuple[str, str] | None:
    """(where, type) of the first value that is an image (in a face-pool worker)."""
    from scrapy_gdpr.faces.imageio import image_in_value

    for where, value in candidates:
        mime = image_in_value(value)
        if mime is not None:
            return where, mime
    return None
