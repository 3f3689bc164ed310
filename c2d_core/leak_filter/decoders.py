"""Wrappers the leak filter looks through: compressed streams, archives, base64 and hex text, JSON strings.

`children(view)` yields the decoded contents found in one view's bytes; the detector scans each of them
like a file of its own, and asks for their children in turn, down to a depth limit. Every decoded byte is
counted against one budget per scanned file, so a decompression bomb costs at most that budget: past it,
or past the expansion ratio, decoding stops with `DecodeLimit`.
"""

from __future__ import annotations

import binascii
import bz2
import codecs
import io
import json
import lzma
import mmap
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, cast

Buffer = bytes | mmap.mmap

# Decoded views up to this size never count against the expansion ratio: small files compress very well
# (a kilobyte of gzip can hold a megabyte of zeros) and cost nothing to scan.
RATIO_GRACE_BYTES = 16 * 1024 * 1024
_PIECE = 1024 * 1024
_RUN_BLOCK = 4 * 1024 * 1024
# JSON documents are parsed whole to read their strings; past this size they are scanned raw only.
MAX_JSON_BYTES = 64 * 1024 * 1024


class DecodeLimit(Exception):
    """Decoding went past the budget or the expansion ratio; the message says which and where."""


@dataclass(frozen=True)
class DecodeLimits:
    max_decoded_bytes: int
    max_expansion_ratio: float
    max_depth: int
    max_archive_members: int


@dataclass
class Budget:
    """Decoded bytes spent for one scanned file, across all of its nested views."""

    limits: DecodeLimits
    spent: int = 0

    def spend(self, count: int, where: str) -> None:
        self.spent += count
        if self.spent > self.limits.max_decoded_bytes:
            raise DecodeLimit(
                f"{where} expands past the decoding limit of {self.limits.max_decoded_bytes} bytes"
            )

    def check_ratio(self, decoded: int, encoded: int, where: str) -> None:
        if decoded > RATIO_GRACE_BYTES and decoded > self.limits.max_expansion_ratio * max(encoded, 1):
            raise DecodeLimit(
                f"{where} expands more than {self.limits.max_expansion_ratio:g} times its stored size"
            )


@dataclass
class View:
    """Bytes to scan and where they came from, e.g. `gzip > tar member 'a.csv' > base64 at byte 120`."""

    where: str
    data: Buffer
    depth: int = 0
    notes: list[str] = field(default_factory=list)


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def safe_name(name: str, limit: int = 80) -> str:
    """A member name fit for a sentence a consumer reads: control characters escaped, length capped."""
    shown = name.encode("unicode_escape", "backslashreplace").decode("ascii")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _join(parent: str, step: str) -> str:
    return f"{parent} > {step}" if parent else step


# --- compressed streams ------------------------------------------------------------------------------


def _stream_kind(data: Buffer) -> tuple[str, Callable[[], _Decompressor]] | None:
    head = bytes(data[:6])
    if head[:2] == b"\x1f\x8b":
        return "gzip", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return "bzip2", bz2.BZ2Decompressor
    if head == b"\xfd7zXZ\x00":
        return "xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib", zlib.decompressobj
    return None


def _decompress(data: Buffer, make: Callable[[], _Decompressor], where: str, budget: Budget) -> bytes:
    """The whole decoded stream (concatenated gzip members too), bounded by the budget and the ratio.

    A truncated or damaged stream yields what decoded before the damage; the raw bytes are scanned anyway.
    """
    out = bytearray()
    consumed = 0
    pending = b""
    magic = bytes(data[:2])

    def account(piece: bytes) -> None:
        out.extend(piece)
        budget.spend(len(piece), where)
        budget.check_ratio(len(out), consumed, where)

    while True:
        decoder = make()
        # zlib keeps input it could not use in `unconsumed_tail`; bz2 and lzma keep it inside.
        keeps_tail = hasattr(decoder, "unconsumed_tail")
        while not decoder.eof:
            if not pending:
                if consumed >= len(data):
                    return bytes(out)
                pending = bytes(data[consumed : consumed + _PIECE])
                consumed += len(pending)
            piece = decoder.decompress(pending, _PIECE)
            account(piece)
            if keeps_tail:
                pending = decoder.unconsumed_tail  # type: ignore[attr-defined]
                while not pending and len(piece) == _PIECE and not decoder.eof:
                    piece = decoder.decompress(b"", _PIECE)
                    account(piece)
            else:
                pending = b""
                while not decoder.eof and not decoder.needs_input:  # type: ignore[attr-defined]
                    account(decoder.decompress(b"", _PIECE))
        pending = decoder.unused_data
        while len(pending) < len(magic) and consumed < len(data):
            more = bytes(data[consumed : consumed + _PIECE])
            consumed += len(more)
            pending += more
        if not pending.startswith(magic) or len(magic) < 2:
            return bytes(out)  # trailing padding or junk after the stream


# --- archives ----------------------------------------------------------------------------------------


def _file_object(data: Buffer) -> BinaryIO:
    """A seekable file over the view; a mapped file serves as its own (no copy)."""
    if isinstance(data, mmap.mmap):
        data.seek(0)
        return cast(BinaryIO, data)
    return io.BytesIO(data)


def _zip_members(view: View, budget: Budget) -> Iterator[View]:
    limits = budget.limits
    try:
        archive = zipfile.ZipFile(_file_object(view.data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) > limits.max_archive_members:
            raise DecodeLimit(
                f"{_join(view.where, 'zip')} holds more than {limits.max_archive_members} members"
            )
        for info in members:
            where = _join(view.where, f"zip member '{safe_name(info.filename)}'")
            if info.flag_bits & 0x1:
                view.notes.append(f"{where} is encrypted and was not read")
                continue
            budget.spend(0, where)
            if info.file_size > limits.max_decoded_bytes - budget.spent:
                raise DecodeLimit(
                    f"{where} declares {info.file_size} bytes, past the decoding limit of "
                    f"{limits.max_decoded_bytes} bytes"
                )
            out = bytearray()
            try:
                with archive.open(info) as member:
                    while piece := member.read(_PIECE):
                        out += piece
                        budget.spend(len(piece), where)
                        budget.check_ratio(len(out), info.compress_size, where)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error) as e:
                view.notes.append(f"{where} could not be fully read ({type(e).__name__})")
            if out:
                yield View(where, bytes(out), view.depth + 1)


def _tar_members(view: View, budget: Budget) -> Iterator[View]:
    limits = budget.limits
    try:
        archive = tarfile.open(fileobj=_file_object(view.data), mode="r:")  # noqa: SIM115
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return
    with archive:
        count = 0
        while True:
            try:
                info = archive.next()
            except (tarfile.TarError, OSError, ValueError, EOFError):
                view.notes.append(f"{_join(view.where, 'tar')} is damaged; members after it were not read")
                return
            if info is None:
                return
            count += 1
            if count > limits.max_archive_members:
                raise DecodeLimit(
                    f"{_join(view.where, 'tar')} holds more than {limits.max_archive_members} members"
                )
            if not info.isreg():
                continue
            where = _join(view.where, f"tar member '{safe_name(info.name)}'")
            # Members are stored, not compressed: their bytes are already in the view and count once.
            handle = archive.extractfile(info)
            if handle is None:
                continue
            content = handle.read()
            budget.spend(len(content), where)
            if content:
                yield View(where, content, view.depth + 1)


# --- text encodings ----------------------------------------------------------------------------------


def _class_table(members: bytes) -> bytes:
    table = bytearray(256)
    for value in members:
        table[value] = 1
    return bytes(table)


_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_\r\n"
_HEX_CHARS = b"0123456789abcdefABCDEF"
_BASE64_CLASS = _class_table(_BASE64_CHARS)
_HEX_CLASS = _class_table(_HEX_CHARS)
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def long_runs(data: Buffer, table: bytes, minimum: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal run of bytes in the class `table` marks with 1, at least `minimum`
    long. Block by block with `translate` and `find`, so a text without long runs costs two C passes."""
    needle = b"\x01" * minimum
    run_start = -1
    for base in range(0, len(data), _RUN_BLOCK):
        marks = bytes(data[base : base + _RUN_BLOCK]).translate(table)
        position = 0
        if run_start >= 0:
            end = marks.find(0)
            if end < 0:
                continue
            if base + end - run_start >= minimum:
                yield run_start, base + end
            run_start, position = -1, end
        while True:
            found = marks.find(needle, position)
            if found < 0:
                break
            end = marks.find(0, found)
            if end < 0:
                run_start = base + found
                break
            yield base + found, base + end
            position = end
        if run_start < 0:
            last_zero = marks.rfind(0)
            if last_zero < len(marks) - 1 and last_zero + 1 >= position:
                run_start = base + last_zero + 1
    if run_start >= 0 and len(data) - run_start >= minimum:
        yield run_start, len(data)


def _base64_views(view: View, window: int, budget: Budget) -> Iterator[View]:
    minimum = (window + 1) * 4 // 3
    for start, end in long_runs(view.data, _BASE64_CLASS, minimum):
        text = bytes(view.data[start:end]).translate(_URLSAFE, b"\r\n=")
        # The run may begin with a few letters that are not part of the encoding (`id` in `idAAAB...`):
        # decode at every alignment; only the right one yields the original bytes.
        for shift in range(4):
            body = text[shift:]
            # Padding was dropped with the line breaks: restore it, or cut a lone trailing character.
            body = body + b"=" * (-len(body) % 4) if len(body) % 4 > 1 else body[: len(body) - len(body) % 4]
            if len(body) * 3 // 4 <= window:
                continue
            where = _join(view.where, f"base64 at byte {start + shift}")
            try:
                decoded = binascii.a2b_base64(body)
            except binascii.Error:
                continue
            budget.spend(len(decoded), where)
            yield View(where, decoded, view.depth + 1)


def _hex_views(view: View, window: int, budget: Budget) -> Iterator[View]:
    for start, end in long_runs(view.data, _HEX_CLASS, 2 * (window + 1)):
        text = bytes(view.data[start:end])
        for shift in range(2):
            body = text[shift:]
            body = body[: len(body) - len(body) % 2]
            where = _join(view.where, f"hex at byte {start + shift}")
            decoded = binascii.unhexlify(body)
            budget.spend(len(decoded), where)
            yield View(where, decoded, view.depth + 1)


def _looks_like_json(data: Buffer) -> bool:
    head = bytes(data[:65536])
    stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if stripped[:1] not in (b"{", b"["):
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _long_strings(document: Any, minimum: int) -> Iterator[str]:
    """Strings (values and keys) of at least `minimum` characters in a parsed JSON document, iteratively."""
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if len(item) >= minimum:
                yield item
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _json_views(view: View, window: int, budget: Budget) -> Iterator[View]:
    """Strings of a JSON document (or JSON lines) with escapes undone: a copied CSV in a JSON string has
    every newline written as two characters, which breaks it into short runs in the raw bytes."""
    data = view.data
    if len(data) > MAX_JSON_BYTES or data.find(b"\\") < 0 or not _looks_like_json(data):
        return
    raw = bytes(data)
    try:
        documents: list[Any] = [json.loads(raw)]
    except ValueError:
        documents = []
        for line in raw.splitlines():
            if line.strip():
                try:
                    documents.append(json.loads(line))
                except ValueError:
                    return
    for number, text in enumerate(_long_strings(documents, (window + 1) // 4)):
        encoded = text.encode("utf-8", "surrogatepass")
        if len(encoded) <= window:
            continue
        where = _join(view.where, f"JSON string {number + 1}")
        budget.spend(len(encoded), where)
        yield View(where, encoded, view.depth + 1)


# --- all of them -------------------------------------------------------------------------------------


def children(view: View, window: int, budget: Budget) -> Iterator[View]:
    """The decoded contents inside `view`, one level down. Raises `DecodeLimit` past the budget."""
    if view.depth >= budget.limits.max_depth:
        return
    data = view.data
    stream = _stream_kind(data)
    if stream is not None:
        name, make = stream
        where = _join(view.where, name)
        try:
            decoded = _decompress(data, make, where, budget)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
            decoded = b""  # not that format after all (or damaged): the raw bytes are still scanned
        if decoded:
            yield View(where, decoded, view.depth + 1)
    if bytes(data[:4]) in (b"PK\x03\x04", b"PK\x05\x06") or (
        len(data) > 22 and data.rfind(b"PK\x05\x06", max(0, len(data) - 65557)) >= 0
    ):
        yield from _zip_members(view, budget)
    if bytes(data[257:262]) == b"ustar":
        yield from _tar_members(view, budget)
    yield from _json_views(view, window, budget)
    yield from _base64_views(view, window, budget)
    yield from _hex_views(view, window, budget)
