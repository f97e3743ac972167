"""scrapy-gdpr: a Scrapy extension that makes a lawful, polite crawl the default.

Enable everything with one line in ``settings.py``::

    ADDONS = {"scrapy_gdpr.Addon": 0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy_gdpr import _moved

__version__ = "0.1.0"

__all__ = ["Addon", "__version__"]

_moved.install()

if TYPE_CHECKING:
    from scrapy_gdpr.addon import Addon


def __getattr__(name: str) -> Any:
    # Imported lazily so that ``import scrapy_gdpr`` (e.g. to read __version__ while
    # building) does not import Scrapy.
    if name == "Addon":
        from scrapy_gdpr.addon import Addon

        return Addon
    raise AttributeError(name)
