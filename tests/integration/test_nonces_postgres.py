"""The nonce store on a real Postgres (127.0.0.1:5432, user postgres, db test, trust auth).

Each test gets its own schema, dropped afterwards. Concurrent requests with one nonce race on real
row locks and a real unique index: exactly one may win.
"""

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from provider_api.nonces import MAX_NONCE, NonceError, NonceStore

pytestmark = pytest.mark.integration

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
ADDRESS = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"


@pytest.fixture
def pg_store() -> Iterator[NonceStore]:
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as error:
        admin.dispose()
        # This machine kind runs Postgres for every session and for CI: its absence is a failure.
        pytest.fail(f"Postgres is not reachable at 127.0.0.1:5432 (user postgres, db test): {error}")
    schema = f"test_nonces_{uuid.uuid4().hex[:12]}"
    store = NonceStore(POSTGRES_URL, schema=schema)
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def race(store: NonceStore, address: str, nonces: list[int]) -> list[int]:
    barrier = threading.Barrier(len(nonces))
    winners: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def attempt(nonce: int) -> None:
        barrier.wait()
        try:
            store.advance(address, nonce)
        except NonceError:
            return
        except BaseException as error:
            with lock:
                failures.append(error)
            return
        with lock:
            winners.append(nonce)

    threads = [threading.Thread(target=attempt, args=(nonce,)) for nonce in nonces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    return winners


def test_table_lives_in_its_own_schema_with_a_bytewise_collation(pg_store: NonceStore) -> None:
    schema = pg_store.table.schema
    with pg_store.engine.connect() as conn:
        row = conn.execute(
            text(
                "select collation_name, character_maximum_length from information_schema.columns "
                "where table_schema = :schema and table_name = 'provider_nonces' and column_name = 'nonce'"
            ),
            {"schema": schema},
        ).one()
    assert row == ("C", 78)


def test_strictly_greater_rule_on_postgres(pg_store: NonceStore) -> None:
    assert pg_store.current(ADDRESS) == 1
    with pytest.raises(NonceError, match=r"expected nonce \(1\) > current nonce \(1\)"):
        pg_store.advance(ADDRESS, 1)
    pg_store.advance(ADDRESS, 9)
    pg_store.advance(ADDRESS.lower(), 10)
    with pytest.raises(NonceError, match=r"current nonce \(10\)"):
        pg_store.advance(ADDRESS.upper().replace("0X", "0x"), 10)
    with pytest.raises(NonceError):
        pg_store.advance(ADDRESS, 2)
    pg_store.advance(ADDRESS, 1_700_000_000_000)
    pg_store.advance(ADDRESS, MAX_NONCE)
    assert pg_store.current(ADDRESS) == MAX_NONCE
    with pytest.raises(NonceError):
        pg_store.advance(ADDRESS, MAX_NONCE)


def test_same_nonce_from_many_threads_wins_exactly_once_on_postgres(pg_store: NonceStore) -> None:
    fresh = "0x" + "33" * 20
    assert race(pg_store, fresh, [1_700_000_000_001] * 12) == [1_700_000_000_001]  # insert race
    for round_nonce in (1_700_000_000_002, 1_700_000_000_010, 1_800_000_000_000):  # update race
        assert race(pg_store, fresh, [round_nonce] * 12) == [round_nonce]
    assert pg_store.current(fresh) == 1_800_000_000_000


def test_concurrent_distinct_nonces_end_at_the_largest_on_postgres(pg_store: NonceStore) -> None:
    address = "0x" + "44" * 20
    winners = race(pg_store, address, list(range(2, 14)))
    assert 13 in winners
    assert pg_store.current(address) == 13
