"""Content-defined anchors: positions chosen by the bytes around them, so a copy re-finds them anywhere.

A position `i` is a candidate when a hash of the `CONTEXT` bytes starting there is zero. The hash is built
from byte tables combined by XOR at fixed offsets; it is computed for a whole block at once with
`bytes.translate` and big-integer XOR (each a C loop over the block), never with a Python loop per byte.
Because a candidate depends only on its own `CONTEXT` bytes, a copy of input bytes placed at any offset in
an output has the same candidates as the input inside it: the anchors resynchronise, like the chunk
boundaries of content-defined chunking.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

# Bytes of context that decide whether a position is a candidate. Eight, not four: in text with a small
# alphabet (digits and commas) four-byte contexts repeat so much that whole regions can lack a candidate.
CONTEXT = 8
_FIRST_LEVEL = 4  # g[i] = XOR of four tables over b[i..i+3]
_SECOND_OFFSET = 4  # h[i] = U[g[i]] ^ V[g[i+4]], so h[i] depends on b[i..i+7]


def _tables(seed: int) -> tuple[tuple[bytes, ...], tuple[bytes, bytes]]:
    """Random byte tables for the two levels. The second pair is built so that U[v] ^ V[v] is never 0:
    content whose period divides 4 (a repeated byte, pair or quadruple, such as zero padding in a weights
    file) has g[i] == g[i+4] everywhere, so it is never a candidate and cannot flood the scan.
    Fixed seed: inputs and outputs must be anchored alike, and results stay reproducible."""
    rng = random.Random(seed)  # noqa: S311 (a fixed, public mixing table; no secret here)
    first = tuple(bytes(rng.randrange(256) for _ in range(256)) for _ in range(_FIRST_LEVEL))
    upper = bytes(rng.randrange(256) for _ in range(256))
    lower = bytes(upper[value] ^ rng.randrange(1, 256) for value in range(256))
    return first, (upper, lower)


FIRST_TABLES, SECOND_TABLES = _tables(0x0CEA2D)


def _mask_table(spacing_bits: int) -> bytes:
    """Maps a hash byte to 0 when its low `spacing_bits` bits are zero (a candidate), else to 1."""
    mask = (1 << spacing_bits) - 1
    return bytes(0 if value & mask == 0 else 1 for value in range(256))


def candidate_hashes(block: bytes | memoryview, spacing_bits: int = 8) -> bytes:
    """One byte per position `i` in `0..len(block) - CONTEXT`: zero exactly when `i` is a candidate.

    With `spacing_bits` 8 a candidate comes on average every 256 bytes of varied content; fewer bits give
    denser candidates (for small windows).
    """
    count = len(block) - CONTEXT + 1
    if count <= 0:
        return b""
    data = bytes(block)
    # Two levels (4 tables, then 2) cost 6 translate+convert passes instead of 8 for the same context.
    width = count + _SECOND_OFFSET
    accumulated = 0
    for offset, table in enumerate(FIRST_TABLES):
        accumulated ^= int.from_bytes(data[offset : offset + width].translate(table), "big")
    first = accumulated.to_bytes(width, "big")
    upper, lower = SECOND_TABLES
    second = int.from_bytes(first[:count].translate(upper), "big") ^ int.from_bytes(
        first[_SECOND_OFFSET:].translate(lower), "big"
    )
    hashes = second.to_bytes(count, "big")
    if spacing_bits < 8:
        hashes = hashes.translate(_mask_table(spacing_bits))
    return hashes


def anchors(hashes: bytes, start: int, stop: int, min_gap: int, previous: int) -> Iterator[int]:
    """Candidate positions in `[start, stop)` of `hashes`, each at least `min_gap` after the one before.

    `previous` is the last anchor taken (in the same coordinates, possibly negative), so the gap rule runs
    on across blocks. The gap bounds the work on periodic content where candidates crowd together; on
    varied content it rarely applies, so input and output anchors agree again within a few anchors.
    """
    position = hashes.find(0, max(start, previous + min_gap), stop)
    while position >= 0:
        yield position
        position = hashes.find(0, position + min_gap, stop)
