"""The leak detector: fingerprints of the inputs, looked up in every output and in what its wrappers hold.

Inputs: every content-defined anchor (see `anchors`) gets a key, the hash of the `KEY_BYTES` bytes from
it, kept with where it was. Outputs: anchored the same way; a key found in the inputs is checked byte by
byte, extending the common run both ways, and a run longer than the window is a copy. A run that long
holds a dozen anchors on average, chosen alike on both sides wherever the run starts, so it is found at
any offset; shorter runs, and runs of near-constant bytes (padding, repeated patterns), pass.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from c2d_core.leak_filter.anchors import CONTEXT, anchors, candidate_hashes
from c2d_core.leak_filter.decoders import Budget, Buffer, DecodeLimit, DecodeLimits, View, children

KEY_BYTES = 64
BLOCK = 64 * 1024  # hashing in 64 KiB blocks is faster than 1 MiB ones (the big integers stay in cache)
MIN_WINDOW = 256
_MAX_LOCATIONS = 4  # input places kept per key: repeated boilerplate must not hide a later copy
_COMPARE = 4096
_OFFSET_BITS = 40
_INFO_PIECE = 64 * 1024
# Whole-file digests are for files the window check may miss (short ones, near-constant ones); a larger
# copy is found by the window check, so hashing big files whole would only cost time.
MAX_WHOLE_FILE_BYTES = 16 * 1024 * 1024


class LeakFilterConfigError(ValueError):
    """The filter's configuration holds an unusable value; the message names the field."""


@dataclass(frozen=True)
class LeakFilterConfig:
    """What the filter refuses, and how much decoding it may spend per file.

    `window_bytes`: an output may hold at most this many consecutive bytes of any input.
    `max_output_share`: if set, outputs may total at most this share of the inputs' bytes (0.5 = half).
    `max_decoded_bytes`, `max_expansion_ratio`, `max_depth`, `max_archive_members`: decoding limits per
    file; an output past any of them is rejected (an input past them is fingerprinted as far as decoded).
    `min_whole_file_bytes`: an output (or a decoded part of one) identical to an input file at least this
    long (and at most 16 MiB) is a copy even when that file is shorter than the window.
    `min_run_information`: a run longer than the window counts only if it compresses to at least this
    many bytes plus 1/128 of its length, so shared zero padding or repeated patterns do not.
    """

    window_bytes: int = 4096
    max_output_share: float | None = None
    max_decoded_bytes: int = 512 * 1024 * 1024
    max_expansion_ratio: float = 100.0
    max_depth: int = 4
    max_archive_members: int = 10_000
    min_whole_file_bytes: int = 64
    min_run_information: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.window_bytes, bool) or self.window_bytes < MIN_WINDOW:
            raise LeakFilterConfigError(f"window_bytes must be a whole number of at least {MIN_WINDOW}")
        share = self.max_output_share
        if share is not None and (not math.isfinite(share) or share <= 0):
            raise LeakFilterConfigError("max_output_share must be a positive number, or null for no limit")
        if self.max_decoded_bytes < 0 or self.max_depth < 0 or self.max_archive_members < 1:
            raise LeakFilterConfigError(
                "max_decoded_bytes and max_depth must be at least 0, max_archive_members at least 1"
            )
        if not math.isfinite(self.max_expansion_ratio) or self.max_expansion_ratio < 1:
            raise LeakFilterConfigError("max_expansion_ratio must be a number of at least 1")
        if self.min_whole_file_bytes < 1 or self.min_run_information < 0:
            raise LeakFilterConfigError(
                "min_whole_file_bytes must be at least 1, min_run_information at least 0"
            )

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> LeakFilterConfig:
        """From a JSON object: unknown fields and values of the wrong type are refused by name."""
        if not isinstance(raw, Mapping):
            raise LeakFilterConfigError("the leak filter configuration must be a JSON object")
        known = cls.__dataclass_fields__
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise LeakFilterConfigError(f"unknown leak filter setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "max_output_share" and value is None:
                values[name] = None
            elif name in ("max_output_share", "max_expansion_ratio"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise LeakFilterConfigError(f"{name} must be a number")
                values[name] = float(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise LeakFilterConfigError(f"{name} must be a whole number")
                values[name] = value
        return cls(**values)

    @property
    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(
            self.max_decoded_bytes, self.max_expansion_ratio, self.max_depth, self.max_archive_members
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spacing_bits(window: int) -> int:
    """Candidates every 2**bits bytes on average: at least a dozen expected inside any window, at most
    one per 256 bytes (the hash byte has 8 bits)."""
    room = max(window - KEY_BYTES, 16) // 12
    return max(3, min(8, room.bit_length() - 1))


@dataclass
class Finding:
    """Where an output holds input bytes: never which input, nor anything of its content."""

    kind: str  # "window" (a run longer than the window) or "whole-file" (equal to an input file)
    where: str  # the view inside the output: "" for its raw bytes, else e.g. "gzip > base64 at byte 12"
    offset: int  # in that view
    length: int  # bytes copied

    def describe(self, path: str, folder: str = "outputs") -> str:
        place = f"{folder}/{path}" + (f" ({self.where})" if self.where else "")
        if self.kind == "whole-file":
            return f"{place} is an exact copy of an input file ({self.length} bytes)"
        return (
            f"{place} holds {self.length} bytes copied verbatim from the inputs, "
            f"starting at byte {self.offset}"
        )


@dataclass
class OutputReport:
    path: str
    size: int
    # Where `path` is: "outputs", or "logs" for the algorithm's log, checked as if it were an output.
    folder: str = "outputs"
    bytes_scanned: int = 0
    views: int = 0
    verdict: str = "pass"
    finding: Finding | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["seconds"] = round(self.seconds, 4)
        return document


@dataclass
class InputStats:
    files: int = 0
    bytes: int = 0
    bytes_scanned: int = 0
    views: int = 0
    fingerprints: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def map_file(handle: BinaryIO) -> Buffer:
    """The file's bytes without reading them into memory (an empty file cannot be mapped)."""
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        return b""
    return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def _blocks(data: Buffer) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) blocks overlapping by KEY_BYTES - 1, so every key's bytes lie in one block."""
    size = len(data)
    for offset in range(0, max(size - KEY_BYTES + 1, 0), BLOCK):
        yield offset, bytes(data[offset : offset + BLOCK + KEY_BYTES - 1])


def common_prefix(a: Buffer, a_start: int, b: Buffer, b_start: int) -> int:
    """How many bytes from a[a_start] and b[b_start] are equal: whole slices first, then bisection."""
    length = 0
    limit = min(len(a) - a_start, len(b) - b_start)
    step = _COMPARE
    while length < limit:
        size = min(step, limit - length)
        if a[a_start + length : a_start + length + size] == b[b_start + length : b_start + length + size]:
            length += size
            step = min(step * 2, 1 << 20)
            continue
        low, high = 0, size  # equal for `low` bytes, unequal for `high`
        while high - low > 1:
            middle = (low + high) // 2
            if (
                a[a_start + length : a_start + length + middle]
                == b[b_start + length : b_start + length + middle]
            ):
                low = middle
            else:
                high = middle
        return length + low
    return length


def common_suffix(a: Buffer, a_end: int, b: Buffer, b_end: int) -> int:
    """How many bytes before a[a_end] and b[b_end] are equal."""
    length = 0
    limit = min(a_end, b_end)
    step = _COMPARE
    while length < limit:
        size = min(step, limit - length)
        if a[a_end - length - size : a_end - length] == b[b_end - length - size : b_end - length]:
            length += size
            step = min(step * 2, 1 << 20)
            continue
        low, high = 0, size
        while high - low > 1:
            middle = (low + high) // 2
            if a[a_end - length - middle : a_end - length] == b[b_end - length - middle : b_end - length]:
                low = middle
            else:
                high = middle
        return length + low
    return length


def informative(data: Buffer, start: int, end: int, floor: int) -> bool:
    """Whether data[start:end] carries information: its deflate size reaches `floor` plus 1/128 of the
    bytes read. Piece by piece, so a long random run decides after one piece."""
    compressor = zlib.compressobj(6)
    produced = 0
    for position in range(start, end, _INFO_PIECE):
        piece = bytes(data[position : min(position + _INFO_PIECE, end)])
        produced += len(compressor.compress(piece)) + len(compressor.flush(zlib.Z_SYNC_FLUSH))
        if produced >= floor + (position + len(piece) - start) // 128:
            return True
    return False


class LeakDetector:
    """Fingerprints inputs (`add_input`), then checks outputs (`scan_output`) against them."""

    def __init__(self, config: LeakFilterConfig | None = None) -> None:
        self.config = config or LeakFilterConfig()
        self.window = self.config.window_bytes
        self.bits = spacing_bits(self.window)
        self.min_gap = max(1, (1 << self.bits) // 8)
        self._keys: dict[int, int | list[int]] = {}
        self._views: list[Buffer] = []  # input views, kept to check candidate runs byte by byte
        self._digests: dict[int, set[bytes]] = {}  # size -> sha256 of input views that long
        self.inputs = InputStats()

    # --- inputs --------------------------------------------------------------------------------------

    def add_input(self, name: str, data: Buffer) -> None:
        """Fingerprint one input file and everything decoded from it (within the decoding limits)."""
        started = time.perf_counter()
        self.inputs.files += 1
        self.inputs.bytes += len(data)
        budget = Budget(self.config.decode_limits)
        try:
            for view in self._walk(View("", data), budget):
                self._fingerprint(view.data)
                self.inputs.notes.extend(view.notes)
        except DecodeLimit as limit:
            # The publisher's own file: what was decoded is fingerprinted, the rest only raw.
            self.inputs.notes.append(f"an input was decoded only in part: {limit}")
        self.inputs.seconds += time.perf_counter() - started

    def _fingerprint(self, data: Buffer) -> None:
        self.inputs.views += 1
        self.inputs.bytes_scanned += len(data)
        if self.config.min_whole_file_bytes <= len(data) <= MAX_WHOLE_FILE_BYTES:
            self._digests.setdefault(len(data), set()).add(_sha256(data))
        if len(data) <= self.window:
            return  # too short to hold a run longer than the window
        view_id = len(self._views)
        self._views.append(data)
        base_location = view_id << _OFFSET_BITS
        keys = self._keys
        previous = -self.min_gap
        for offset, block in _blocks(data):
            hashes = candidate_hashes(block, self.bits)
            stop = min(BLOCK, len(block) - KEY_BYTES + 1)
            for position in anchors(hashes, 0, stop, self.min_gap, previous - offset):
                key = hash(block[position : position + KEY_BYTES])
                location = base_location | (offset + position)
                known = keys.get(key)
                if known is None:
                    keys[key] = location
                elif isinstance(known, int):
                    keys[key] = [known, location]
                elif len(known) < _MAX_LOCATIONS:
                    known.append(location)
                previous = offset + position
        self.inputs.fingerprints = len(keys)

    # --- outputs -------------------------------------------------------------------------------------

    def scan_output(self, path: str, data: Buffer, folder: str = "outputs") -> OutputReport:
        """Check one output file (`path` under `folder`), raw and decoded; stops at its first finding."""
        started = time.perf_counter()
        report = OutputReport(path=path, size=len(data), folder=folder)
        budget = Budget(self.config.decode_limits)
        try:
            for view in self._walk(View("", data), budget):
                report.views += 1
                report.bytes_scanned += len(view.data)
                finding = self._check(view)
                report.notes.extend(view.notes)
                if finding is not None:
                    report.verdict, report.finding = "reject", finding
                    report.reason = finding.describe(path, folder) + (
                        f"; outputs may hold at most {self.window} consecutive bytes of an input"
                        if finding.kind == "window"
                        else ""
                    )
                    break
        except DecodeLimit as limit:
            # Fail closed: bytes past the limit were never looked at, so a copy could hide there.
            report.verdict = "reject"
            report.reason = f"{folder}/{path}: {limit}, so it cannot be checked for copied inputs"
        report.seconds = time.perf_counter() - started
        return report

    def _walk(self, root: View, budget: Budget) -> Iterator[View]:
        """The view and, depth first, everything decoded from it; each decoded view is dropped once its
        own children are done, so memory holds one chain of nested views at a time."""
        stack: list[Iterator[View]] = [iter([root])]
        while stack:
            view = next(stack[-1], None)
            if view is None:
                stack.pop()
                continue
            yield view
            stack.append(children(view, self.window, budget))

    def _check(self, view: View) -> Finding | None:
        data = view.data
        size = len(data)
        digests = self._digests.get(size)
        if digests and _sha256(data) in digests:
            return Finding("whole-file", view.where, 0, size)
        if size <= self.window or not self._keys:
            return None
        keys = self._keys
        skip_until = 0  # end of the last near-constant run: anchors inside it were already judged
        previous = -self.min_gap
        for offset, block in _blocks(data):
            hashes = candidate_hashes(block, self.bits)
            stop = min(BLOCK, len(block) - KEY_BYTES + 1)
            for position in anchors(hashes, 0, stop, self.min_gap, previous - offset):
                previous = offset + position
                known = keys.get(hash(block[position : position + KEY_BYTES]))
                if known is None or previous < skip_until:
                    continue
                for location in [known] if isinstance(known, int) else known:
                    start, end = self._common_run(data, previous, location)
                    if end - start <= self.window:
                        continue
                    if informative(data, start, end, self.config.min_run_information):
                        return Finding("window", view.where, start, end - start)
                    skip_until = max(skip_until, end)
        return None

    def _common_run(self, data: Buffer, position: int, location: int) -> tuple[int, int]:
        """The maximal run around data[position] equal to the input bytes around `location`."""
        source = self._views[location >> _OFFSET_BITS]
        source_offset = location & ((1 << _OFFSET_BITS) - 1)
        forward = common_prefix(data, position, source, source_offset)
        if forward < KEY_BYTES:
            return position, position  # a hash collision, not a match
        backward = common_suffix(data, position, source, source_offset)
        return position - backward, position + forward


def _sha256(data: Buffer) -> bytes:
    digest = hashlib.sha256()
    view = memoryview(data)
    for offset in range(0, len(data), 8 * 1024 * 1024):
        digest.update(view[offset : offset + 8 * 1024 * 1024])
    view.release()
    return digest.digest()


def build_report(
    detector: LeakDetector, outputs: list[OutputReport], seconds: Mapping[str, float]
) -> dict[str, Any]:
    """The stage's report: the verdict, one sentence a consumer may read, and the figures behind it."""
    config = detector.config
    rejected = [output for output in outputs if output.verdict == "reject"]
    output_bytes = sum(output.size for output in outputs)
    reason = rejected[0].reason if rejected else ""
    if len(rejected) > 1:
        reason += f" (and {len(rejected) - 1} more output(s) refused)"
    share = config.max_output_share
    if not reason and share is not None and output_bytes > share * detector.inputs.bytes:
        reason = (
            f"the outputs total {output_bytes} bytes, more than {share:g} of the inputs' "
            f"{detector.inputs.bytes} bytes that this environment allows"
        )
    inputs = detector.inputs
    return {
        "verdict": "reject" if reason else "pass",
        "reason": reason or f"no output holds more than {config.window_bytes} consecutive bytes of an input",
        "config": config.as_dict(),
        "inputs": {
            "files": inputs.files,
            "bytes": inputs.bytes,
            "bytes_scanned": inputs.bytes_scanned,
            "views": inputs.views,
            "fingerprints": inputs.fingerprints,
            "notes": inputs.notes[:20],
        },
        "outputs": [output.as_dict() for output in outputs],
        "bytes_scanned": inputs.bytes_scanned + sum(output.bytes_scanned for output in outputs),
        "timings": {name: round(value, 4) for name, value in seconds.items()},
    }


__all__ = [
    "CONTEXT",
    "KEY_BYTES",
    "Finding",
    "InputStats",
    "LeakDetector",
    "LeakFilterConfig",
    "LeakFilterConfigError",
    "OutputReport",
    "build_report",
    "map_file",
]
