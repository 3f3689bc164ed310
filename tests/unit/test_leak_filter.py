"""The leak filter's detector: copies of inputs are found however they are wrapped; aggregates pass."""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import os
import random
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from c2d_core.leak_filter import LeakDetector, LeakFilterConfig, LeakFilterConfigError, build_report
from c2d_core.leak_filter.anchors import CONTEXT, candidate_hashes
from c2d_core.leak_filter.decoders import long_runs

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 4096
RNG = random.Random(20261203)
BINARY = RNG.randbytes(1 << 20)
CSV = (
    "date,city,temp_c,rain_mm\n"
    + "".join(
        f"2026-{1 + i // 2000 % 12:02d}-{1 + i % 28:02d},{RNG.choice(['Lisbon', 'Berlin', 'Oslo'])},"
        f"{RNG.uniform(-10, 35):.1f},{RNG.uniform(0, 20):.1f}\n"
        for i in range(20_000)
    )
).encode()


@pytest.fixture(scope="module")
def detector() -> LeakDetector:
    found = LeakDetector(LeakFilterConfig(window_bytes=WINDOW))
    found.add_input("did/0", BINARY)
    found.add_input("did/1", CSV)
    return found


def _verdict(detector: LeakDetector, data: bytes, name: str = "out.bin") -> str:
    report = detector.scan_output(name, data)
    assert (report.verdict == "reject") == bool(report.reason)
    return report.verdict


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _embedded(piece: bytes, size: int, offset: int) -> bytes:
    """`piece` at `offset` of random bytes whose neighbours of it differ from the input's, so the common
    run is exactly `piece` (a matching neighbour by chance would make it one byte longer)."""
    out = bytearray(RNG.randbytes(size))
    out[offset : offset + len(piece)] = piece
    return bytes(out)


# --- must reject ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "wrap"),
    [
        ("plain", lambda data: data),
        ("gzip", gzip.compress),
        ("bzip2", bz2.compress),
        ("xz", lzma.compress),
        ("base64", base64.b64encode),
        ("base64 with line breaks", base64.encodebytes),
        ("urlsafe base64", base64.urlsafe_b64encode),
        ("hex", lambda data: data.hex().encode()),
        ("hex upper case", lambda data: data.hex().upper().encode()),
        ("zip", lambda data: _zip({"a/readme.txt": b"hello", "a/data.bin": data})),
        ("tar", lambda data: _tar({"data.bin": data}, "w")),
        ("tar.gz", lambda data: _tar({"x/data.bin": data})),
        ("zip in tar.gz", lambda data: _tar({"inner.zip": _zip({"d": data})})),
        ("base64 in gzip", lambda data: gzip.compress(base64.b64encode(data))),
    ],
)
@pytest.mark.parametrize("source", ["binary", "csv"])
def test_wrapped_copies_are_rejected(detector: LeakDetector, label: str, wrap, source: str) -> None:
    data = BINARY if source == "binary" else CSV
    assert _verdict(detector, wrap(data)) == "reject", label


@pytest.mark.parametrize("source", ["binary", "csv"])
def test_part_of_an_input_inside_a_larger_json_is_rejected(detector: LeakDetector, source: str) -> None:
    data = (BINARY if source == "binary" else CSV)[100_003:150_000]
    as_base64 = json.dumps({"model": "x", "counts": [1, 2, 3], "blob": base64.b64encode(data).decode()})
    assert _verdict(detector, as_base64.encode(), "result.json") == "reject"
    if source == "csv":
        # newlines become "\n" in the JSON text: only the decoded string holds the run
        as_string = json.dumps({"rows": data.decode(), "mean": 12.5})
        assert b"\n" not in as_string.encode()
        assert _verdict(detector, as_string.encode(), "result.json") == "reject"
        lines = "\n".join(json.dumps({"i": i, "text": data.decode()}) for i in range(2))
        assert _verdict(detector, lines.encode(), "result.jsonl") == "reject"


def test_escaped_slashes_in_json_base64_are_undone(detector: LeakDetector) -> None:
    encoded = base64.b64encode(BINARY[:20_000]).decode().replace("/", "\\/")
    assert _verdict(detector, ('{"blob": "' + encoded + '"}').encode()) == "reject"


def test_base64_after_a_prefix_of_letters_is_found_at_any_alignment(detector: LeakDetector) -> None:
    for prefix in (b"", b"x", b"id", b"abc"):
        assert _verdict(detector, b"payload:" + prefix + base64.b64encode(BINARY[:30_000])) == "reject"


def test_a_run_one_byte_longer_than_the_window_at_an_odd_offset_is_rejected(detector: LeakDetector) -> None:
    for start, offset in ((333_333, 77_777), (5, 1), (901_235, 12_345)):
        out = _embedded(BINARY[start : start + WINDOW + 1], 200_000, offset)
        report = detector.scan_output("weights.bin", out)
        assert report.verdict == "reject"
        assert report.finding is not None
        assert (report.finding.offset, report.finding.length) == (offset, WINDOW + 1)
        assert "weights.bin" in report.reason and "4097 bytes" in report.reason


def test_a_csv_run_just_past_the_window_is_rejected(detector: LeakDetector) -> None:
    piece = CSV[300_001 : 300_001 + WINDOW + 1]
    out = b"city,mean\n" + b"Lisbon,1.0\n" * 100 + piece + b"\nOslo,2.0\n"
    assert _verdict(detector, out, "stats.csv") == "reject"


def test_a_run_one_byte_shorter_than_the_window_passes(detector: LeakDetector) -> None:
    start, offset = 333_333, 77_777
    out = bytearray(_embedded(BINARY[start : start + WINDOW - 1], 200_000, offset))
    out[offset - 1] = BINARY[start - 1] ^ 0xFF
    out[offset + WINDOW - 1] = BINARY[start + WINDOW - 1] ^ 0xFF
    assert _verdict(detector, bytes(out)) == "pass"
    # exactly the window is allowed too: "beyond the window" is refused
    out[offset + WINDOW - 1] = BINARY[start + WINDOW - 1]
    out[offset + WINDOW] = BINARY[start + WINDOW] ^ 0xFF
    assert _verdict(detector, bytes(out)) == "pass"


def test_a_small_input_copied_whole_is_rejected() -> None:
    detector = LeakDetector()
    small = b"name,age\nalice,34\nbob,27\ncarol,41\n" * 3
    detector.add_input("did/0", small)
    assert _verdict(detector, small) == "reject"
    assert _verdict(detector, gzip.compress(small)) == "reject"
    assert _verdict(detector, small + b"\n") == "pass"  # below the window, not whole: a tripwire's limit


def test_a_compressed_input_decompressed_into_the_outputs_is_rejected() -> None:
    detector = LeakDetector()
    detector.add_input("did/0", gzip.compress(CSV))
    assert _verdict(detector, CSV[1000:60_000]) == "reject"


def test_the_report_never_shows_input_names_or_content(detector: LeakDetector) -> None:
    out = _embedded(BINARY[10_000:20_000], 50_000, 999)
    report = build_report(detector, [detector.scan_output("o.bin", out)], {"total_seconds": 1.0})
    text = json.dumps(report)
    assert report["verdict"] == "reject"
    assert "did/0" not in text and "did/1" not in text
    assert BINARY[10_000:10_016].hex() not in text
    assert report["reason"].startswith("outputs/o.bin holds 10000 bytes copied verbatim")


# --- must pass -----------------------------------------------------------------------------------------


def test_the_demo_algorithm_output_passes(tmp_path: Path) -> None:
    did = "0" * 64
    (tmp_path / "inputs" / did).mkdir(parents=True)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "inputs" / did / "0").write_bytes(CSV)
    (tmp_path / "inputs" / did / "1").write_bytes((ROOT / "examples/data/weather.csv").read_bytes())
    env = {
        **os.environ,
        "INPUTS": str(tmp_path / "inputs"),
        "OUTPUTS": str(tmp_path / "outputs"),
        "DIDS": json.dumps([did]),
    }
    subprocess.run([sys.executable, str(ROOT / "examples/algorithms/summary.py")], env=env, check=True)
    summary = (tmp_path / "outputs" / "summary.json").read_bytes()
    assert b"Lisbon" in summary
    detector = LeakDetector()
    detector.add_input("0", CSV)
    detector.add_input("1", (ROOT / "examples/data/weather.csv").read_bytes())
    assert _verdict(detector, summary, "summary.json") == "pass"


def test_model_weights_pass(detector: LeakDetector) -> None:
    weights = struct.pack(f"<{500_000}f", *(RNG.gauss(0, 0.1) for _ in range(500_000)))
    sparse = bytes(8192) + weights[:100_000] + bytes(65536)
    assert _verdict(detector, weights, "model.bin") == "pass"
    assert _verdict(detector, sparse, "sparse.bin") == "pass"
    assert _verdict(detector, gzip.compress(sparse), "sparse.bin.gz") == "pass"
    assert _verdict(detector, base64.b64encode(weights), "model.b64") == "pass"


def test_statistics_and_counts_pass(detector: LeakDetector) -> None:
    stats = "column,count,mean,std,min,max\n" + "".join(
        f"c{i},{RNG.randint(1, 10**6)},{RNG.random():.6f},{RNG.random():.6f},"
        f"{-RNG.random():.3f},{RNG.random():.3f}\n"
        for i in range(5000)
    )
    counts = json.dumps(
        {f"2026-{m:02d}-{d:02d}": RNG.randint(0, 999) for m in range(1, 13) for d in range(1, 29)}
    )
    header_only = CSV[:25]  # the input's header line: shorter than the window, not a whole file
    assert _verdict(detector, stats.encode(), "stats.csv") == "pass"
    assert _verdict(detector, counts.encode(), "counts.json") == "pass"
    assert _verdict(detector, header_only + stats.encode(), "stats2.csv") == "pass"
    assert _verdict(detector, _zip({"stats.csv": stats.encode(), "counts.json": counts.encode()})) == "pass"


def test_shared_padding_and_repeated_patterns_pass() -> None:
    pattern = b"0.0,0.0,0.0\n" * 20_000
    detector = LeakDetector()
    detector.add_input("did/0", bytes(100_000) + pattern + b"\xff" * 50_000 + b"abc" * 30_000)
    assert (
        _verdict(detector, b"\x00" * 70_000 + b"abc" * 20_000 + pattern[:90_000] + b"\xff" * 20_000) == "pass"
    )


# --- limits ----------------------------------------------------------------------------------------------


def test_a_decompression_bomb_is_rejected_with_its_reason() -> None:
    detector = LeakDetector(LeakFilterConfig(max_decoded_bytes=8 << 20))
    detector.add_input("did/0", BINARY)
    bomb = gzip.compress(bytes(64 << 20))
    report = detector.scan_output("result.gz", bomb)
    assert report.verdict == "reject"
    assert "outputs/result.gz" in report.reason and "decoding limit of 8388608 bytes" in report.reason
    ratio = LeakDetector(LeakFilterConfig(max_expansion_ratio=10))
    ratio.add_input("did/0", BINARY)
    report = ratio.scan_output("r.zip", _zip({"zeros": bytes(40 << 20)}))
    assert report.verdict == "reject" and "10 times its stored size" in report.reason


def test_many_zip_members_are_a_bomb_too() -> None:
    detector = LeakDetector(LeakFilterConfig(max_archive_members=3))
    detector.add_input("did/0", BINARY)
    assert _verdict(detector, _zip({str(i): b"x" for i in range(4)})) == "reject"


def test_an_output_share_limit_rejects_large_outputs(detector: LeakDetector) -> None:
    limited = LeakDetector(LeakFilterConfig(max_output_share=0.5))
    limited.add_input("did/0", CSV)
    small = limited.scan_output("small.csv", b"a,b\n1,2\n")
    big = limited.scan_output("big.bin", RNG.randbytes(len(CSV)))
    assert build_report(limited, [small], {})["verdict"] == "pass"
    report = build_report(limited, [small, big], {})
    assert report["verdict"] == "reject" and "more than 0.5 of the inputs'" in report["reason"]


def test_damaged_wrappers_are_scanned_raw() -> None:
    detector = LeakDetector()
    detector.add_input("did/0", BINARY)
    truncated = gzip.compress(b"hello " * 10_000)[:200]
    assert _verdict(detector, truncated) == "pass"
    assert _verdict(detector, b"PK\x03\x04" + BINARY[:10_000]) == "reject"  # not a zip, still a copy


@pytest.mark.parametrize(
    "raw",
    [
        {"window_bytes": 100},
        {"window_bytes": "4096"},
        {"window_bytes": True},
        {"max_output_share": 0},
        {"max_output_share": "half"},
        {"max_expansion_ratio": 0.5},
        {"windows": 4096},
    ],
)
def test_bad_settings_are_refused_by_name(raw: dict[str, object]) -> None:
    with pytest.raises(LeakFilterConfigError) as caught:
        LeakFilterConfig.from_mapping(raw)
    assert next(iter(raw)) in str(caught.value)


def test_a_smaller_window_is_honoured() -> None:
    detector = LeakDetector(LeakFilterConfig(window_bytes=512))
    detector.add_input("did/0", BINARY)
    assert _verdict(detector, _embedded(BINARY[7777 : 7777 + 513], 100_000, 4321)) == "reject"
    out = bytearray(_embedded(BINARY[7777 : 7777 + 511], 100_000, 4321))
    out[4320], out[4321 + 511] = BINARY[7776] ^ 1, BINARY[7777 + 511] ^ 1
    assert _verdict(detector, bytes(out)) == "pass"


# --- building blocks -----------------------------------------------------------------------------------


def test_periodic_content_is_never_a_candidate() -> None:
    for period in (1, 2, 4):
        for _ in range(300):
            unit = RNG.randbytes(period)
            assert 0 not in candidate_hashes(unit * (64 // period)), unit


def test_candidates_depend_only_on_their_context() -> None:
    data = RNG.randbytes(100_000)
    shifted = RNG.randbytes(13) + data
    assert candidate_hashes(shifted)[13:] == candidate_hashes(data)
    assert len(candidate_hashes(data)) == len(data) - CONTEXT + 1
    assert 200 < candidate_hashes(data).count(0) < 600  # about one per 256 bytes


def test_long_runs_across_block_boundaries() -> None:
    table = bytes(1 if value == ord("a") else 0 for value in range(256))
    block = 4 * 1024 * 1024
    data = b"b" * (block - 10) + b"a" * 30 + b"b" * 5 + b"a" * 25 + b"b"
    assert list(long_runs(data, table, 20)) == [(block - 10, block + 20), (block + 25, block + 50)]
    assert list(long_runs(b"a" * 50, table, 20)) == [(0, 50)]
    assert list(long_runs(b"ba" * 100, table, 2)) == []
