"""ISO 8601 durations (``P30D``, ``PT24H``, ``P1Y6M``) as used in policy files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from dateutil.relativedelta import relativedelta

_DURATION_RE = re.compile(
    r"^P(?!$)"
    r"(?:(?P<years>\d+)Y)?"
    r"(?:(?P<months>\d+)M)?"
    r"(?:(?P<weeks>\d+)W)?"
    r"(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)"
    r"(?:(?P<hours>\d+)H)?"
    r"(?:(?P<minutes>\d+)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?"
    r")?$"
)


@dataclass(frozen=True)
class Duration:
    """A calendar-aware ISO 8601 duration.

    Years and months are added with calendar arithmetic (``P1M`` from 31 January is
    the end of February), so an expiry computed from a duration is the one a person
    reading the policy expects.
    """

    text: str
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``text``; raise :class:`ValueError` with a readable message."""
        if not isinstance(text, str):
            # pydantic turns a ValueError (not a TypeError) into the policy's validation error
            raise ValueError(f"expected an ISO 8601 duration string such as P30D, got {text!r}")  # noqa: TRY004
        match = _DURATION_RE.match(text.strip().upper())
        if not match:
            raise ValueError(
                f"{text!r} is not an ISO 8601 duration "
                "(examples: P30D for 30 days, P6M for six months, PT24H for 24 hours)"
            )
        parts = {k: v for k, v in match.groupdict().items() if v is not None}
        values: dict[str, float | int] = {}
        for key, value in parts.items():
            values[key] = float(value) if key == "seconds" else int(value)
        return cls(text=text.strip().upper(), **values)  # type: ignore[arg-type]

    def add_to(self, moment: datetime) -> datetime:
        """Return ``moment`` plus this duration."""
        result: datetime = moment + relativedelta(
            years=self.years,
            months=self.months,
            weeks=self.weeks,
            days=self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
        )
        return result

    def approx_timedelta(self) -> timedelta:
        """An approximation (a year is 365 days, a month 30) for TTLs and sorting."""
        return timedelta(
            days=self.years * 365 + self.months * 30 + self.weeks * 7 + self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
        )

    def total_seconds(self) -> float:
        return self.approx_timedelta().total_seconds()

    def __str__(self) -> str:
        return self.text

    def describe(self) -> str:
        """Plain-language form for documents read by people: ``30 days``."""
        units = [
            (self.years, "year"),
            (self.months, "month"),
            (self.weeks, "week"),
            (self.days, "day"),
            (self.hours, "hour"),
            (self.minutes, "minute"),
            (self.seconds, "second"),
        ]
        words = []
        for amount, unit in units:
            if amount:
                shown = int(amount) if float(amount).is_integer() else amount
                words.append(f"{shown} {unit}{'' if amount == 1 else 's'}")
        return ", ".join(words) if words else "no time"
