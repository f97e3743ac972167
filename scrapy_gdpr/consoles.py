"""Scrapy's consoles that run Python code sent to a crawler, and whether a crawl runs them.

One rule, used by the add-on (which switches them off), ``scrapy gdpr-check`` and the
review document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.misc import load_object

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


#: Scrapy's consoles that execute Python code sent to the crawler.
CONSOLE_SETTINGS = ("TELNETCONSOLE_ENABLED", "REMOTE_CONTROL_ENABLED")
#: The extension each console setting switches.
CONSOLE_EXTENSIONS = {
    "TELNETCONSOLE_ENABLED": "scrapy.extensions.telnet.TelnetConsole",
    "REMOTE_CONTROL_ENABLED": "scrapy.extensions.remote_control.RemoteControl",
}


def remote_consoles(settings: BaseSettings) -> dict[str, bool]:
    """Which of Scrapy's code-execution consoles a crawl under the add-on runs.

    ``{"TELNETCONSOLE_ENABLED": False, "REMOTE_CONTROL_ENABLED": False}`` unless a
    project, spider or command-line setting switched one on explicitly (see
    :func:`console_enabled`).
    """
    return {name: console_enabled(settings, name) for name in CONSOLE_SETTINGS}


def console_enabled(settings: BaseSettings, name: str = "TELNETCONSOLE_ENABLED") -> bool:
    """Whether Scrapy's console switched by the setting ``name`` runs in a crawl under the add-on.

    The rule the add-on applies: the console is off unless the project's own settings
    switch it on explicitly, that is, a true value set at a priority above the
    add-on's (``settings.py``, a spider's ``custom_settings``, ``-s``); Scrapy's
    default (on) does not count. A console whose extension is set to ``None`` in
    ``EXTENSIONS`` is off. The answer is the same for a project's settings before the
    add-on ran (``scrapy gdpr-report``) and for a crawler's settings after it.
    """
    priority = settings.getpriority(name)
    if priority is None or priority <= SETTINGS_PRIORITIES["addon"] or not settings.getbool(name):
        return False
    extension = CONSOLE_EXTENSIONS.get(name)
    return extension is None or not _extension_disabled(settings, extension)


def _extension_disabled(settings: BaseSettings, path: str) -> bool:
    """Whether ``EXTENSIONS`` switches the extension at ``path`` off (``None``)."""
    for key, order in settings.getwithbase("EXTENSIONS").items():
        if order is not None:
            continue
        if key == path:
            return True
        try:
            obj = load_object(key) if isinstance(key, str) else key
        except Exception:  # noqa: BLE001, S112 - an entry that cannot be loaded is not the console
            continue
        if _qualname(obj) == path:
            return True
    return False


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def telnet_console_enabled(settings: BaseSettings) -> bool:
    """Whether a crawl under the add-on listens with Scrapy's telnet console."""
    return remote_consoles(settings)["TELNETCONSOLE_ENABLED"]


__all__ = ["CONSOLE_EXTENSIONS", "CONSOLE_SETTINGS", "console_enabled", "remote_consoles", "telnet_console_enabled"]
