"""`c2d admin review` without a stack: its help, and each way an operator's command can go wrong said in a
sentence with what to do (no traceback): a job id that is not one, no webserver (a closed loopback port,
a loopback server that is not Dagster's GraphQL API, no embedded stack), no held results in the store,
and a held result whose bytes no longer match the held manifest (never written). The commands against a
real webserver: tests/e2e/test_review_flow.py."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from c2d_cli.main import app
from c2d_core import review
from c2d_core.results import MANIFEST_NAME, LocalResultStore, ResultEntry, manifest_document

JOB = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("C2D_HOME", "C2D_RESULTS_DIR", "C2D_RESULT_STORE", "C2D_DAGSTER_URL", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no recorded stack home
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, env: dict[str, str] | None = None):
        result = CliRunner().invoke(app, ["admin", "review", *args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    return invoke


class _NotDagster(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        # Under /missing: a 404 page; elsewhere an HTML page for any path (a proxy's catch-all).
        body = b"<html>not here</html>"
        self.send_response(404 if self.path.startswith("/missing/") else 200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def not_dagster() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotDagster)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def flat(text: str) -> str:
    """Output without rich's panel borders and line breaks, for matching sentences."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_names_every_subcommand(run) -> None:
    shown = run("--help")
    assert shown.exit_code == 0
    for command in ("list", "show", "download", "approve", "reject"):
        assert command in shown.output
    assert run().exit_code in (0, 2) and "approve" in run().output  # no arguments: the help


def test_a_job_id_that_is_not_one_is_refused_before_anything_is_asked(run) -> None:
    for command in ("show", "download", "approve"):
        answer = run(command, "../../etc")
        assert answer.exit_code == 2
        assert "is not a job id: the Provider's jobId is 32 hex characters" in flat(answer.output)


def test_an_unreachable_webserver_names_the_setting_to_fix(run) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    for args, env in (
        (("list", "--dagster-url", url), None),
        (("show", JOB), {"C2D_DAGSTER_URL": url}),
        (("approve", JOB, "--dagster-url", url), None),
    ):
        answer = run(*args, env=env)
        assert answer.exit_code == 1, answer.output
        assert f"cannot reach the Dagster webserver at {url}" in answer.output
        assert "--dagster-url" in answer.output and "C2D_DAGSTER_URL" in answer.output
        assert "Traceback" not in answer.output


def test_a_server_that_is_not_dagsters_graphql_api_is_named_as_such(run, not_dagster: str) -> None:
    for url, said in ((f"{not_dagster}/missing", "HTTP 404"), (not_dagster, "HTTP 200, not JSON")):
        answer = run("list", "--dagster-url", url)
        assert answer.exit_code == 1
        assert f"{url}/graphql answered {said}: it is not a Dagster webserver's GraphQL API" in answer.output
        assert "--dagster-url" in answer.output and "Traceback" not in answer.output
    bad = run("list", "--dagster-url", "webserver:3000")
    assert bad.exit_code == 1 and "is not an http(s) URL of a Dagster webserver" in bad.output


def test_no_embedded_stack_and_no_url(run, tmp_path: Path) -> None:
    answer = run("list", "--home", str(tmp_path / "nowhere"))
    assert answer.exit_code == 1
    assert f"no Dagster webserver to ask: no embedded stack runs at {tmp_path / 'nowhere'}" in answer.output
    assert "--dagster-url" in answer.output and "C2D_DAGSTER_URL" in answer.output


def _held(home: Path, files: dict[str, bytes]) -> Path:
    """A job's held results in the embedded layout's local store, as the publish pod leaves them."""
    store = LocalResultStore(home / "results")
    entries = []
    for index, (name, content) in enumerate(files.items()):
        stored = store.put(review.held_key(JOB), name, io.BytesIO(content))
        entries.append(
            ResultEntry(
                index=index,
                filename=name,
                filesize=stored.size,
                type="output",
                sha256=stored.sha256,
                location=stored.location,
            )
        )
    store.put(review.held_key(JOB), MANIFEST_NAME, io.BytesIO(manifest_document(entries)))
    return home / "results" / review.held_key(JOB)


def test_download_checks_each_file_and_keeps_none_that_differs(run, tmp_path: Path) -> None:
    home = tmp_path / "stack"
    absent = run("download", JOB, "--home", str(home))
    assert absent.exit_code == 1
    assert f"job {JOB} holds no results for review in the local result store at {home / 'results'}" in (
        flat(absent.output)
    )

    held = _held(home, {"total.txt": b"6", "model.bin": b"weights" * 100})
    fetched = run("download", JOB, "--home", str(home), "--dir", str(tmp_path / "out"), "-o", "json")
    assert fetched.exit_code == 0, fetched.output
    saved = json.loads(fetched.output)
    assert [item["filename"] for item in saved] == ["total.txt", "model.bin"]
    assert all("location" not in item for item in saved)
    assert (tmp_path / "out" / JOB / "model.bin").read_bytes() == b"weights" * 100
    assert saved[1]["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest()

    missing = run("download", JOB, "0", "5", "--home", str(home))
    assert missing.exit_code == 1 and "holds no result 5: its held results are 0..1" in missing.output

    (held / "model.bin").write_bytes(b"weights" * 99 + b"changed")
    again = tmp_path / "again"
    tampered = run("download", JOB, "--home", str(home), "--dir", str(again))
    assert tampered.exit_code == 1
    assert "held result 1 (model.bin)" in tampered.output and "does not match the held manifest" in (
        flat(tampered.output)
    )
    assert sorted(path.name for path in (again / JOB).iterdir()) == ["total.txt"]
