"""The leak filter pod: refuse a job whose outputs hold a verbatim copy of its inputs beyond a window.

Run as `python -m c2d_defs.pods.leak_filter` in a pod that mounts the job's /data (inputs and outputs
read-only) and no network. Reads its settings from `C2D_LEAK_FILTER_CONFIG` (a JSON object, see
`c2d_core.leak_filter.LeakFilterConfig`), writes its full report as JSON to `C2D_LEAK_FILTER_REPORT` and
a short one to the termination log. Exit 0 for both verdicts, pass and reject: a non-zero exit means the
filter itself failed (bad settings 1, anything else 2), and a stage must then treat the outputs as unchecked.
Everything under /data/outputs was written by the consumer's algorithm: no symlink is followed and no
special file opened, like the publish pod, so the filter sees exactly what publish would store. The
algorithm's log (/data/logs/algorithm.log) is the algorithm's writing too, which publish stores and the
consumer downloads: it is checked as if it were one more output.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from c2d_core.leak_filter import LeakDetector, LeakFilterConfig, LeakFilterConfigError, build_report, map_file
from c2d_defs.pods import layout
from c2d_defs.pods.common import EnvError, PodLog, Terminated, raise_on_sigterm, write_termination_message

CONFIG_ENV = "C2D_LEAK_FILTER_CONFIG"
REPORT_ENV = "C2D_LEAK_FILTER_REPORT"
DEFAULT_REPORT_PATH = f"{layout.ADMINLOGS_PATH}/leak-filter.json"
# The algorithm's log under the volume (layout.ALGORITHM_LOG is relative to the job's volume root).
ALGORITHM_LOG = "logs/algorithm.log"
EXIT_BAD_SETTINGS = 1
EXIT_FAILED = 2


def load_config(environ: Mapping[str, str]) -> LeakFilterConfig:
    raw = environ.get(CONFIG_ENV, "").strip() or "{}"
    try:
        document = json.loads(raw)
    except ValueError:
        raise EnvError(f"{CONFIG_ENV} must be a JSON object") from None
    try:
        return LeakFilterConfig.from_mapping(document)
    except (LeakFilterConfigError, TypeError) as error:
        raise EnvError(f"{CONFIG_ENV}: {error}") from None


def regular_files(root: Path, log: PodLog, what: str) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of the regular files under `root`, sorted; symlinks and special files are
    skipped (and logged by their place under `what`, never their target)."""
    if root.is_symlink() or not root.is_dir():
        log(f"no {what} folder")
        return
    pending: list[tuple[Path, str]] = [(root, "")]
    found: list[tuple[str, Path]] = []
    while pending:
        folder, prefix = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            log(f"could not list {what}/{prefix}: {error.strerror or type(error).__name__}")
            continue
        for entry in entries:
            relative = prefix + entry.name
            if entry.is_symlink():
                log(f"skipped symlink {what}/{relative}")
            elif entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), relative + "/"))
            elif entry.is_file(follow_symlinks=False):
                found.append((relative, Path(entry.path)))
            else:
                log(f"skipped special file {what}/{relative}")
    yield from sorted(found)


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open only a regular file: O_NOFOLLOW refuses a symlink swapped in, O_NONBLOCK a FIFO's hang."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def run(volume: Path, config: LeakFilterConfig, log: PodLog) -> dict[str, Any]:
    """Fingerprint every input, scan every output; the report `build_report` makes."""
    started = time.perf_counter()
    detector = LeakDetector(config)
    with contextlib.ExitStack() as keep_open:  # input mappings stay until every output is checked
        for relative, path in regular_files(volume / "inputs", log, "inputs"):
            if relative == layout.ALGO_CUSTOM_DATA:
                continue  # the consumer's own parameters, not the publisher's data
            try:
                handle = keep_open.enter_context(open_regular(path))
                detector.add_input(relative, map_file(handle))
            except OSError as error:
                log(f"could not read an input: {error.strerror or type(error).__name__}")
        inputs = detector.inputs
        fingerprinted = time.perf_counter()
        log(
            f"fingerprinted {inputs.files} input file(s), {inputs.bytes} bytes ({inputs.bytes_scanned} with "
            f"decoded contents), {inputs.fingerprints} fingerprints in {fingerprinted - started:.2f} s"
        )
        outputs = []
        scanned = [
            ("outputs", name, path) for name, path in regular_files(volume / "outputs", log, "outputs")
        ]
        algorithm_log = volume / ALGORITHM_LOG
        if os.path.lexists(algorithm_log):
            # A symlink or special file in its place is skipped by open_regular, as publish skips it.
            scanned.append(("logs", algorithm_log.name, algorithm_log))
        for folder, relative, path in scanned:
            try:
                with open_regular(path) as handle:
                    data = map_file(handle)
                    try:
                        report = detector.scan_output(relative, data, folder)
                    finally:
                        if not isinstance(data, bytes):
                            data.close()
            except OSError as error:
                log(f"skipped {folder}/{relative}: {error.strerror or 'not a regular file'}")
                continue
            outputs.append(report)
            log(
                f"{folder}/{relative}: {report.verdict}, {report.bytes_scanned} bytes in {report.views} "
                f"view(s) in {report.seconds:.2f} s" + (f": {report.reason}" if report.reason else "")
            )
        finished = time.perf_counter()
        return build_report(
            detector,
            outputs,
            {
                "fingerprint_seconds": fingerprinted - started,
                "scan_seconds": finished - fingerprinted,
                "total_seconds": finished - started,
            },
        )


def _write_report(path: Path, report: Mapping[str, Any], log: PodLog) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(report, indent=1))
        temporary.replace(path)  # a reader never sees half a report
    except OSError as error:
        log(f"could not write the report: {error.strerror or type(error).__name__}")
        return False
    return True


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    log = PodLog("leak-filter")
    termination_log = Path(environ.get("TERMINATION_LOG") or layout.TERMINATION_LOG_PATH)
    report_path = Path(environ.get(REPORT_ENV) or DEFAULT_REPORT_PATH)
    exit_code = layout.EXIT_OK
    try:
        config = load_config(environ)
        report = run(Path(environ.get("VOLUME") or layout.VOLUME_PATH), config, log)
    except EnvError as error:
        exit_code, report = EXIT_BAD_SETTINGS, {"verdict": "error", "reason": f"leak filter: {error}"}
    except Terminated as error:
        exit_code, report = EXIT_FAILED, {"verdict": "error", "reason": f"leak filter: {error}"}
    except Exception as error:
        exit_code = EXIT_FAILED
        report = {"verdict": "error", "reason": f"leak filter failed unexpectedly ({type(error).__name__})"}
    log(f"verdict {report['verdict']}: {report['reason']}")
    if not _write_report(report_path, report, log) and exit_code == layout.EXIT_OK:
        exit_code = EXIT_FAILED
    summary = {
        "verdict": report["verdict"],
        "message": report["reason"],
        "outputs": len(report.get("outputs", [])),
        "bytes_scanned": report.get("bytes_scanned", 0),
        "seconds": report.get("timings", {}).get("total_seconds", 0),
    }
    write_termination_message(termination_log, summary, log)
    return exit_code


if __name__ == "__main__":
    raise_on_sigterm()
    sys.exit(main())
