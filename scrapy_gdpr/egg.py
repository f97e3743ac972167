"""Policy files deployed inside a project's egg (Scrapyd).

Scrapyd runs a job from the project's egg, in Scrapyd's own folder: there is no
``scrapy.cfg`` and no project folder, only the zip archive Scrapyd put on
``sys.path``. An egg built from the project's ``setup.py`` with the policy files
as ``data_files`` holds them at its top level, where they sit in the project folder
(``policies/gallery.yaml`` beside ``example/settings.py``): the egg's top level
stands for the project folder.

So when the project's settings module was imported from a zip archive, a relative
``GDPR_POLICY`` is read from the archive: the policy's folder (the policy, its
terms snapshots, its objection list as deployed) is copied out, read-only, into a
private temporary folder that is removed when the process ends, and the policy is
loaded from there.

Nothing in an egg can be written, and an erasure must reach the next crawl without
a new deploy: what a crawl writes lives in the job's working folder, which stands
for the project folder there (relative ``GDPR_LEDGER``, ``GDPR_AUDIT_LOG`` and
``GDPR_REPORT_DIR`` already resolve against it). So does the policy's objection
list: a policy read from ``policies/`` in the egg uses ``policies/objections.txt``
(its ``objections.path``) under the working folder, the list ``gdpr-erase`` writes
to on that host; the list deployed in the egg applies as well
(:func:`scrapy_gdpr.gate.objections.deployed_objections_path`).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import posixpath
import shutil
import stat
import tempfile
import threading
import zipfile
import zipimport
from pathlib import Path

#: extracted folder -> (egg path, the folder's path relative to the project folder)
_EXTRACTED: dict[Path, tuple[str, str]] = {}
_CACHE: dict[tuple[str, str], Path] = {}
_LOCK = threading.Lock()

#: Never copied out of an egg with a policy folder: code and the egg's metadata.
_SKIPPED_SUFFIXES = (".py", ".pyc", ".pyo", ".so")


def settings_archive() -> tuple[str, str] | None:
    """The zip archive the project's settings module (``SCRAPY_SETTINGS_MODULE``) was
    imported from and the prefix inside it that stands for the project folder, or
    None when the settings are ordinary files."""
    module = os.environ.get("SCRAPY_SETTINGS_MODULE")
    if not module:
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    loader = getattr(spec, "loader", None)
    if not isinstance(loader, zipimport.zipimporter):
        return None
    prefix = loader.prefix.replace(os.sep, "/")  # e.g. "example/" for example.settings
    package = "/".join(module.split(".")[:-1])
    package = package + "/" if package else ""
    if package and prefix.endswith(package):
        prefix = prefix[: -len(package)]
    return loader.archive, prefix


def policy_from_egg(relative: str) -> Path | None:
    """The policy ``relative`` (a path relative to the project folder) as a file
    copied out of the project's egg, or None when the project does not run from an
    egg. Raises ValueError when it does but the egg has no such file."""
    found = settings_archive()
    if found is None:
        return None
    archive, root = found
    name = posixpath.normpath(relative.replace(os.sep, "/"))
    if name.startswith("../") or name == "..":
        raise ValueError(f"GDPR_POLICY {relative} points outside the project's egg {archive}")
    member = root + name
    folder = posixpath.dirname(member)
    try:
        with zipfile.ZipFile(archive) as egg:
            names = set(egg.namelist())
            if member not in names:
                raise ValueError(
                    f"the policy file {relative} is not in the project's egg {archive}: a project deployed as an egg "
                    f"(Scrapyd) carries its policy files only when its setup.py lists them (data_files, as in the "
                    f"example project's setup.py); or set GDPR_POLICY to an absolute path on this host"
                )
            target = _extract(egg, archive, root, folder, names)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"the policy file {relative} could not be read from the project's egg {archive}: {exc}") from None
    return target / posixpath.relpath(member, folder or ".")


def _extract(egg: zipfile.ZipFile, archive: str, root: str, folder: str, names: set[str]) -> Path:
    """Copy the files under ``folder`` (the policy's folder in the egg) out, read-only, once per process."""
    key = (archive, folder)
    with _LOCK:
        if key in _CACHE and _CACHE[key].is_dir():
            return _CACHE[key]
        target = Path(tempfile.mkdtemp(prefix="scrapy-gdpr-policy-"))
        atexit.register(shutil.rmtree, target, True)
        prefix = folder + "/" if folder else ""
        for name in sorted(names):
            if not name.startswith(prefix) or name.endswith("/") or name.endswith(_SKIPPED_SUFFIXES):
                continue
            inner = posixpath.normpath(name[len(prefix):])
            if inner.startswith(("../", "EGG-INFO/")) or posixpath.isabs(inner):
                continue
            dest = target.joinpath(*inner.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(egg.read(name))
            dest.chmod(stat.S_IRUSR | stat.S_IRGRP)
        _CACHE[key] = target
        _EXTRACTED[target.resolve()] = (archive, folder[len(root):])
        return target


def egg_of(path: Path | str | None) -> str | None:
    """The egg a policy file loaded from :func:`policy_from_egg` came from, or None."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    for folder, (archive, _) in _EXTRACTED.items():
        if resolved.is_relative_to(folder):
            return archive
    return None


def project_folder_of(path: Path | str | None) -> str | None:
    """For a file copied out of an egg by :func:`policy_from_egg`: its folder's path
    relative to the project folder (``"policies"``), else None."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    for folder, (_, inner) in _EXTRACTED.items():
        if resolved.is_relative_to(folder):
            return posixpath.join(inner, *resolved.parent.relative_to(folder).parts)
    return None
