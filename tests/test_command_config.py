"""The commands read the GDPR_* settings through the same GdprConfig as a crawl."""

from __future__ import annotations

import argparse

import pytest
from scrapy.exceptions import UsageError
from scrapy.settings import Settings

from scrapy_gdpr.commands import _rights
from scrapy_gdpr.config import GdprConfig


def _opts(**kwargs):
    return argparse.Namespace(**{"ledger": None, "spider": None, "policy": None, "audit_log": None, **kwargs})


def test_an_empty_ledger_setting_means_no_ledger_for_the_commands_too():
    settings = Settings({"GDPR_LEDGER": ""})
    assert GdprConfig.from_settings(settings).ledger is None  # the crawl keeps none
    with pytest.raises(UsageError, match="GDPR_LEDGER is empty"):
        _rights.ledger_url(_opts(), settings)
    assert _rights.ledger_url(_opts(ledger="sqlite:///elsewhere.db"), settings) == "sqlite:///elsewhere.db"


def test_the_commands_open_the_crawls_ledger(tmp_path, monkeypatch):
    (tmp_path / "scrapy.cfg").write_text("[settings]\ndefault = x.settings\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    settings = Settings({"GDPR_LEDGER": "sqlite:///data/ledger.sqlite3"})
    expected = GdprConfig.from_settings(settings).ledger
    assert expected == f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite3'}"
    assert _rights.ledger_url(_opts(), settings) == expected


def test_an_empty_audit_log_setting_means_no_audit_log():
    assert _rights.audit_template(Settings({"GDPR_AUDIT_LOG": ""})) is None
    assert _rights.audit_template(Settings({"GDPR_AUDIT_LOG": "logs/%(name)s.jsonl"})) == "logs/%(name)s.jsonl"
