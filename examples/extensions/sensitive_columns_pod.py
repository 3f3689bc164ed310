"""Example output stage, part 2 of 3: the pod program of `sensitive_columns` (standard library only).

Runs in the stage's own pod (c2d_defs.stage_pods.output_stage_spec: the job's /data read-only, no
network, no secret) as `python -m sensitive_columns_pod`. It reads the header row of every CSV or TSV
output (`*.csv`, `*.tsv`, either gzipped as `*.csv.gz` / `*.tsv.gz`) under /data/outputs and refuses
the outputs when one has a column named in `C2D_SENSITIVE_COLUMNS` (a JSON list the stage computed
from the DDOs). The verdict goes to the termination message, the engine's default protocol:
`{"verdict": "pass" | "reject", "message": "one sentence"}`, exit code 0 for both. Anything else
(a crash, exit 1 with `"verdict": "error"`) makes the engine withhold the outputs: fail closed.

What it checks is names in header rows, not values: an output that carries the sensitive values
under another name, in JSON, or without a header passes. The leak filter (docs/leak-filter.md) is
the engine's check for copied bytes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import stat
import sys
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

COLUMNS_ENV = "C2D_SENSITIVE_COLUMNS"
CASE_SENSITIVE_ENV = "C2D_SENSITIVE_CASE_SENSITIVE"
TERMINATION_LOG = "/dev/termination-log"
MESSAGE_LIMIT = 4096
# A header row longer than this cannot be checked, so its file is refused (fail closed).
HEADER_LIMIT = 1024 * 1024
DELIMITERS = {".csv": ",", ".tsv": "\t"}


class Unreadable(Exception):
    """An output that looks like a table but whose header cannot be read."""


def delimiter_of(name: str) -> str | None:
    """`,` or a tab for the names this stage checks, None for every other output."""
    lower = name.lower().removesuffix(".gz")
    for suffix, delimiter in DELIMITERS.items():
        if lower.endswith(suffix):
            return delimiter
    return None


def header_of(path: Path, delimiter: str) -> list[str]:
    """The first row of a (possibly gzipped) delimited file: its column names."""
    try:
        with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb") as file:
            head = file.read(HEADER_LIMIT + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise Unreadable(f"cannot be read ({type(error).__name__})") from None
    if len(head) > HEADER_LIMIT and b"\n" not in head:
        raise Unreadable(f"has a header row longer than {HEADER_LIMIT} bytes")
    # utf-8-sig drops a byte order mark, which would otherwise glue itself to the first name.
    text = head.decode("utf-8-sig", errors="replace")
    try:
        return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    except csv.Error as error:
        raise Unreadable(f"has a header row that is not {delimiter!r}-delimited text ({error})") from None


def outputs_of(root: Path) -> Iterator[Path]:
    """The regular files under `root`, sorted; symlinks and special files are skipped, as publish
    skips them, so the stage checks exactly what publish would store."""
    for folder, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def _key(name: str, case_sensitive: bool) -> str:
    name = name.strip().strip('"').strip()
    return name if case_sensitive else name.casefold()


def check(volume: Path, sensitive: list[str], case_sensitive: bool) -> tuple[str, str, int]:
    """(verdict, message, tables checked) for the outputs under `volume`/outputs."""
    wanted = {_key(name, case_sensitive): name for name in sensitive}
    checked = 0
    for path in outputs_of(volume / "outputs"):
        delimiter = delimiter_of(path.name)
        if delimiter is None:
            continue
        shown = path.relative_to(volume).as_posix()
        try:
            columns = header_of(path, delimiter)
        except Unreadable as why:
            return "reject", f"{shown} {why}, so it cannot be checked for sensitive columns", checked
        checked += 1
        print(f"{shown}: {len(columns)} column(s) checked", flush=True)
        for column in columns:
            found = wanted.get(_key(column, case_sensitive))
            if found is not None:
                return (
                    "reject",
                    f"{shown} has the column {found!r}, which the dataset's metadata marks as sensitive",
                    checked,
                )
    return "pass", f"{checked} table(s) checked, none with a sensitive column", checked


def write_termination_message(path: Path, report: Mapping[str, object]) -> None:
    text = json.dumps(report)
    if len(text.encode()) > MESSAGE_LIMIT:
        report = {**report, "message": str(report.get("message", ""))[: MESSAGE_LIMIT // 2]}
        text = json.dumps(report)
    path.write_text(text)


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    termination = Path(environ.get("TERMINATION_LOG") or TERMINATION_LOG)
    try:
        sensitive = json.loads(environ.get(COLUMNS_ENV) or "[]")
        if not isinstance(sensitive, list) or not all(isinstance(name, str) for name in sensitive):
            raise ValueError(f"{COLUMNS_ENV} must be a JSON list of column names")
        case_sensitive = (environ.get(CASE_SENSITIVE_ENV) or "false").lower() == "true"
        verdict, message, checked = check(Path(environ.get("VOLUME") or "/data"), sensitive, case_sensitive)
    except Exception as error:  # any failure is reported, and withholds the outputs
        print(f"sensitive_columns: {type(error).__name__}: {error}", flush=True)
        write_termination_message(
            termination, {"verdict": "error", "message": f"the check failed ({type(error).__name__})"}
        )
        return 1
    print(f"sensitive_columns: {verdict}: {message}", flush=True)
    write_termination_message(termination, {"verdict": verdict, "message": message, "tables": checked})
    return 0


if __name__ == "__main__":
    sys.exit(main())
