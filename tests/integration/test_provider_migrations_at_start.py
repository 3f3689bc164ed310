"""The Provider migrates its database when it starts, on the real Postgres (127.0.0.1:5432, trust).

Each test gets a database of its own, created and dropped here. The first request then finds the
schema at head already; a database the Provider cannot reach fails the start, loudly and with the
reason, instead of a Provider that answers 503 on its first signed request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fixtures_postgres import database_url, fresh_database
from sqlalchemy import create_engine, inspect

from provider_api import migrations
from provider_api.main import create_app
from provider_api.settings import ProviderSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database("c2d_provider") as name:
        yield database_url(name)


def test_the_database_is_at_head_once_the_provider_has_started(database: str) -> None:
    engine = create_engine(database)
    try:
        assert migrations.current(engine) is None
        with TestClient(create_app(ProviderSettings(nonce_db_url=database))) as client:
            # Started, and not one request yet: the schema is there already.
            assert migrations.current(engine) == migrations.head()
            tables = set(inspect(engine).get_table_names())
            assert {"provider_nonces", "provider_agreements", "provider_alembic_version"} <= tables
            address = "0x" + "ab" * 20
            response = client.get("/api/services/nonce", params={"userAddress": address})
            assert response.status_code == 200 and response.json()["nonce"] == 1
    finally:
        engine.dispose()


def test_a_provider_whose_database_is_missing_does_not_start(database: str) -> None:
    missing = database + "_missing"
    app = create_app(ProviderSettings(nonce_db_url=missing))
    with pytest.raises(RuntimeError) as caught, TestClient(app):
        pass
    message = str(caught.value)
    assert "cannot be migrated" in message and "does not exist" in message
    assert database.rsplit("/", 1)[1] + "_missing" in message


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_uvicorn_exits_at_start_with_the_reason(database: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "C2D_HOME": str(tmp_path),
        "PROVIDER_NONCE_DB_URL": "postgresql+psycopg2://postgres:secret-pw@127.0.0.1:5432/c2d_no_such_db",
    }
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    command = [uvicorn, "--factory", "provider_api.main:create_app", "--host", "127.0.0.1"]
    done = subprocess.run(
        [*command, "--port", str(_free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert done.returncode == 3  # uvicorn's "startup failed"
    assert "Application startup failed" in done.stderr
    assert "c2d_no_such_db" in done.stderr and "cannot be migrated" in done.stderr
    assert "secret-pw" not in done.stderr  # the URL is shown without its password
