"""scrapy gdpr-redact: run the face stage over image files or folders."""

from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from scrapy_gdpr.faces.stage import ACTIONS, process_image
from scrapy_gdpr.policy import FacePolicy, PolicyError, load_policy

if TYPE_CHECKING:
    import argparse

    from scrapy_gdpr.faces.stage import Verdict
    from scrapy_gdpr.policy import Policy

#: Files taken from folders (files named on the command line are always taken).
IMAGE_SUFFIXES = frozenset(
    [".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".dib", ".svg", ".svgz", ".avif", ".heic", ".heif", ".ico", ".jp2", ".jxl"]
)


#: Files larger than this are refused without being read (Scrapy's default
#: DOWNLOAD_MAXSIZE: a crawl never stores a bigger download either).
MAX_INPUT_BYTES = 1024 * 1024 * 1024


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def collect(inputs: list[str]) -> list[tuple[Path, str]]:
    """``(path, relative name)`` of every image to process, folders walked recursively."""
    found: list[tuple[Path, str]] = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                relative = sub.relative_to(path)
                if any(part.startswith(".") for part in relative.parts) or not sub.is_file():
                    continue
                if sub.suffix and sub.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                found.append((sub, relative.as_posix()))
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise UsageError(f"no such file or folder: {arg}")
    names: dict[str, Path] = {}
    for path, rel in found:
        if rel in names:
            raise UsageError(f"two inputs would be written to the same name {rel!r}: {names[rel]} and {path}")
        names[rel] = path
    return found


def check_out(out: Path, inputs: list[str], files: list[tuple[Path, str]]) -> None:
    """Refuse an output folder that is, or is inside, an input folder, or that would
    overwrite an input file (symbolic links and ``..`` resolved)."""
    target = out.resolve()
    for arg in inputs:
        path = Path(arg).resolve()
        if Path(arg).is_dir() and (target == path or path in target.parents):
            raise UsageError(f"--out {out} is inside the input folder {arg}; choose a folder outside it")
    for path, rel in files:
        source = path.resolve()
        if target in (source, *source.parents) or (target / rel).resolve() == source:
            raise UsageError(f"--out {out} would overwrite the input {path}; choose a new folder")


def _refusal(reason: str, detail: str) -> Verdict:
    from scrapy_gdpr.faces.stage import Verdict

    return Verdict(False, reason=reason, detail=detail)


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "INPUT... --out DIR [options]"

    def short_desc(self) -> str:
        return "Run the face stage on image files or folders and write the redacted copies"

    def long_desc(self) -> str:
        return (
            "Decode, check, redact and re-encode (without metadata) every image given, or found in the "
            "folders given, exactly as the face stage does during a crawl, and write each result into DIR "
            "under the same relative name. Exits with status 1 when any image was not stored."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--out", metavar="DIR", help="folder for the redacted copies (required)")
        parser.add_argument("--detections-out", metavar="FILE",
                            help='write {"name": [[x, y, w, h, score], ...]} in pixels of each input image')
        parser.add_argument("--policy", metavar="POLICY", help="policy file whose faces section to apply")
        parser.add_argument("--action", choices=ACTIONS, help="override faces.action")
        parser.add_argument("--workers", type=int, default=0, metavar="N",
                            help="threads, each with its own detector (default: the CPU count)")
        parser.add_argument("--max-bytes", type=int, default=MAX_INPUT_BYTES, metavar="N",
                            help=f"refuse input files larger than N bytes (default {MAX_INPUT_BYTES})")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if not args:
            raise UsageError("give at least one image file or folder")
        if not opts.out:
            raise UsageError("--out DIR is required")
        if opts.workers < 0:
            raise UsageError("--workers must be positive")
        policy: Policy | None = None
        if opts.policy:
            try:
                policy = load_policy(opts.policy)
            except PolicyError as exc:
                raise UsageError(str(exc)) from None
        faces = policy.faces if policy is not None else FacePolicy()  # keep only with an Art. 9 condition
        if opts.max_bytes <= 0:
            raise UsageError("--max-bytes must be positive")
        files = collect(args)
        out = Path(opts.out)
        check_out(out, args, files)
        workers = opts.workers or _cpu_count()

        def one(item: tuple[Path, str]) -> Verdict:
            path, _ = item
            try:
                size = path.stat().st_size
                if size > opts.max_bytes:
                    return _refusal("too_large", f"{size} bytes, the limit is {opts.max_bytes} (--max-bytes)")
                data = path.read_bytes()
            except MemoryError:
                return _refusal("too_large", "not enough memory to read the file")
            except OSError as exc:
                return _refusal("unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")
            return process_image(data, face_policy=faces, action=opts.action, output="same")

        detections: dict[str, list[list[float]]] = {}
        refused: list[tuple[str, str, str]] = []
        stored = redacted = faces_found = 0

        def done(rel: str, verdict: Verdict) -> None:
            # Each result is written as soon as it is ready and then let go: memory
            # holds the images in progress, never the whole run.
            nonlocal stored, redacted, faces_found
            if verdict.checked:
                detections[rel] = verdict.source_boxes()
                faces_found += verdict.faces
            if not verdict.stored:
                refused.append((rel, verdict.reason, verdict.detail))
                return
            target = out / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(verdict.data)
            except OSError as exc:
                refused.append((rel, "write_failed", f"{type(exc).__name__}: {exc.strerror or exc}"))
                return
            stored += 1
            redacted += verdict.action in ("blur", "pixelate", "fill")

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gdpr-redact") as pool:
            pending: dict[Future[Verdict], str] = {}
            queue = iter(files)
            for item in queue:
                pending[pool.submit(one, item)] = item[1]
                while len(pending) >= workers * 2:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done(pending.pop(future), future.result())
            for future in list(pending):
                done(pending.pop(future), future.result())

        if opts.detections_out:
            lines = [f"{json.dumps(name)}: {json.dumps(boxes)}" for name, boxes in sorted(detections.items())]
            Path(opts.detections_out).write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
        action = opts.action or faces.action
        print(f"gdpr-redact: {len(files)} image(s), action {action}: {stored} written to {out} "
              f"({redacted} redacted, {faces_found} face(s) found), {len(refused)} not stored")
        for rel, reason, detail in sorted(refused):
            print(f"not stored: {rel}: {reason}" + (f" ({detail})" if detail else ""))
        if refused:
            self.exitcode = 1
