"""Following a pod's log (c2d_defs.pod_output): whole lines, scrubbed, cut at the cap with a line saying
so; the live copy in a real local result store, bounded; and the root-side reader that never follows a
link a pod left in its volume (c2d_defs.sandbox.host.read_volume_file)."""

from __future__ import annotations

import os
from pathlib import Path

from c2d_core.live_logs import LIVE_LOG_NAME, scrub_for_operators
from c2d_core.results import LocalResultStore
from c2d_defs.pod_output import LiveLogCopy, PodOutput, followed
from c2d_defs.sandbox.host import read_volume_file


class GrowingLog:
    """A log file that grows between polls, read like a runner's `read_log`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")

    def append(self, data: bytes) -> None:
        with self.path.open("ab") as handle:
            handle.write(data)

    def read(self, offset: int, limit: int) -> bytes:
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(limit)


def test_lines_pass_on_whole_and_scrubbed_as_they_arrive(tmp_path: Path) -> None:
    log = GrowingLog(tmp_path / "pod.log")
    seen: list[str] = []
    output = PodOutput(log.read, "algorithm", seen.append)
    log.append(b"one\ntwo, then half a URL: https://data.exa")
    output.poll()
    assert seen == ["[algorithm] one\n"]  # the unfinished line waits: a cut URL would escape the scrub
    log.append(b"mple/key?sig=1 done\n\x1b[2Jbell\x07\n")
    output.poll()
    assert seen[1:] == ["[algorithm] two, then half a URL: <url> done\n", "[algorithm] \\x1b[2Jbell\\x07\n"]
    log.append(b"no newline at the end")
    output.finish()
    assert seen[-1] == "[algorithm] no newline at the end\n"


def test_output_is_cut_at_the_cap_with_one_line_saying_so(tmp_path: Path) -> None:
    log = GrowingLog(tmp_path / "pod.log")
    seen: list[str] = []
    output = PodOutput(log.read, "configure", seen.append, cap=100)
    log.append(b"".join(b"line %d\n" % i for i in range(100)))
    output.finish()
    assert sum(map(len, seen)) <= 100 + len(seen[-1])
    assert seen[-1] == "[c2d] configure pod output cut here at 0 KiB; the results hold the full log\n"
    assert seen.count(seen[-1]) == 1
    # Past the cap, with no live copy to feed, the log is not even read any more.
    log.append(b"more\n")
    before = output.offset
    output.poll()
    assert output.offset == before


def test_long_lines_flow_in_pieces() -> None:
    data = b"x" * (200 * 1024)
    seen: list[str] = []
    output = PodOutput(lambda offset, limit: data[offset : offset + limit], "algorithm", seen.append)
    output.poll()
    assert len(seen) == 3 and all(len(piece) == len("[algorithm] \n") + 64 * 1024 for piece in seen)


def test_live_copy_is_stored_bounded_and_its_location_told_once(tmp_path: Path) -> None:
    store = LocalResultStore(tmp_path / "results")
    told: list[str] = []
    now = [0.0]
    live = LiveLogCopy(store, "a" * 32, told.append, cap=10, interval=5.0, clock=lambda: now[0])
    live.add(b"12345")
    live.store_now()
    target = tmp_path / "results" / ("a" * 32) / LIVE_LOG_NAME
    assert target.read_bytes() == b"12345" and told == [f"{'a' * 32}/{LIVE_LOG_NAME}"]
    live.add(b"678")
    live.store_now()  # within the interval: not rewritten yet
    assert target.read_bytes() == b"12345"
    now[0] = 6.0
    live.add(b"9abcdef")
    live.store_now()
    content = target.read_bytes()
    assert content.startswith(b"123456789a") and b"cut here at" in content and b"bcdef" not in content
    live.add(b"later")
    live.store_now(final=True)
    assert target.read_bytes() == content and told == [f"{'a' * 32}/{LIVE_LOG_NAME}"]


def test_follower_thread_reads_while_the_block_runs(tmp_path: Path) -> None:
    log = GrowingLog(tmp_path / "pod.log")
    seen: list[str] = []
    output = PodOutput(log.read, "publish", seen.append)
    with followed(output, interval=0.01):
        log.append(b"during\n")
        for _ in range(1000):  # bounded wait for the thread's poll, no timing asserted
            if seen:
                break
            os.sched_yield()
            (tmp_path / "pod.log").stat()
        log.append(b"after\n")
    assert seen[-1] == "[publish] after\n" and "[publish] during\n" in seen


def test_reader_never_follows_a_link_a_pod_left(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "data" / "logs").mkdir(parents=True)
    secret = tmp_path / "host-secret"
    secret.write_text("root only")
    (volume / "data" / "logs" / "algorithm.log").write_text("hello")
    assert read_volume_file(volume, "data/logs/algorithm.log", 1, 3) == b"ell"
    os.unlink(volume / "data" / "logs" / "algorithm.log")
    os.symlink(secret, volume / "data" / "logs" / "algorithm.log")
    assert read_volume_file(volume, "data/logs/algorithm.log", 0, 100) == b""
    # A folder swapped for a link to the host is not walked through either.
    os.rename(volume / "data" / "logs", volume / "data" / "old")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "algorithm.log").write_text("host file")
    os.symlink(tmp_path / "elsewhere", volume / "data" / "logs")
    assert read_volume_file(volume, "data/logs/algorithm.log", 0, 100) == b""
    os.mkfifo(volume / "data" / "old" / "fifo")
    assert read_volume_file(volume, "data/old/fifo", 0, 100) == b""
    assert read_volume_file(volume, "data/missing.log", 0, 100) == b""


def test_scrub_keeps_tabs_and_cuts_urls() -> None:
    assert scrub_for_operators("a\tb s3://bucket/key.") == "a\tb <url>."
    # A scheme longer than the pattern's bound still loses its host and path.
    assert scrub_for_operators("x" * 100 + "://host/secret").endswith("x" * 68 + "<url>")
