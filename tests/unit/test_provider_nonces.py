"""The nonce store on SQLite (the embedded default): parsing, the strictly-greater rule, and the
compare-and-set under concurrent requests carrying the same nonce.

The same behaviour on Postgres: tests/integration/test_nonces_postgres.py.
"""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provider_api.nonces import MAX_NONCE, NonceError, NonceStore, NonceStoreUnavailable, parse_nonce

ADDRESS = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NonceStore]:
    nonce_store = NonceStore(f"sqlite:///{tmp_path / 'deep' / 'nonces.db'}")
    yield nonce_store
    nonce_store.dispose()


def race(store: NonceStore, address: str, nonces: list[int]) -> list[int]:
    """Advance `address` from one thread per nonce, all released at once; the nonces that won."""
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
        except BaseException as error:  # anything else (a lock timeout) must fail the test
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


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("5", 5), (" 17 ", 17), ("1700000000000", 1700000000000), ("12.0", 12), (12.0, 12), (0, 0)],
)
def test_parse_nonce_accepts_whole_numbers(value: object, expected: int) -> None:
    assert parse_nonce(value) == expected


@pytest.mark.parametrize(
    "value",
    ["abc", "", "1.5", 1.5, "-1", -3, True, None, "NaN", "inf", "0x10", str(MAX_NONCE + 1), "1e999999999"],
)
def test_parse_nonce_refuses_everything_else(value: object) -> None:
    with pytest.raises(NonceError):
        parse_nonce(value)


def test_unknown_address_starts_at_one_and_is_stored(store: NonceStore) -> None:
    assert store.current(ADDRESS) == 1
    assert store.current(ADDRESS.lower()) == 1
    with pytest.raises(NonceError, match=r"expected nonce \(1\) > current nonce \(1\)"):
        store.advance(ADDRESS, 1)


def test_nonces_must_strictly_increase(store: NonceStore) -> None:
    store.advance(ADDRESS, 2)
    assert store.current(ADDRESS) == 2
    with pytest.raises(NonceError, match=r"expected nonce \(2\) > current nonce \(2\)") as same:
        store.advance(ADDRESS, "2")
    assert same.value.current == 2
    with pytest.raises(NonceError, match="current nonce"):
        store.advance(ADDRESS, 1)
    store.advance(ADDRESS, 3)
    assert store.current(ADDRESS) == 3


def test_an_address_never_seen_may_start_with_a_timestamp(store: NonceStore) -> None:
    store.advance(ADDRESS, 1_700_000_000_000)
    assert store.current(ADDRESS) == 1_700_000_000_000


def test_addresses_are_keyed_case_insensitively(store: NonceStore) -> None:
    store.advance(ADDRESS.lower(), 5)
    with pytest.raises(NonceError):
        store.advance(ADDRESS.upper().replace("0X", "0x"), 5)
    assert store.current(ADDRESS) == 5


def test_comparison_is_numeric_not_textual(store: NonceStore) -> None:
    # As text "10" < "9" and "1700000000000" < "999"; zero-padding keeps the order numeric.
    store.advance(ADDRESS, 9)
    store.advance(ADDRESS, 10)
    store.advance(ADDRESS, 999)
    store.advance(ADDRESS, 1_700_000_000_000)
    with pytest.raises(NonceError):
        store.advance(ADDRESS, 999_999_999_999)
    store.advance(ADDRESS, MAX_NONCE - 1)
    store.advance(ADDRESS, MAX_NONCE)
    assert store.current(ADDRESS) == MAX_NONCE
    with pytest.raises(NonceError):
        store.advance(ADDRESS, MAX_NONCE + 1)


def test_same_nonce_from_many_threads_wins_exactly_once(store: NonceStore) -> None:
    fresh = "0x" + "11" * 20
    assert race(store, fresh, [7] * 12) == [7]  # the insert race: the address is new
    for round_nonce in (8, 9, 50):  # the update race: the row exists
        assert race(store, fresh, [round_nonce] * 12) == [round_nonce]
    assert store.current(fresh) == 50


def test_concurrent_distinct_nonces_end_at_the_largest(store: NonceStore) -> None:
    address = "0x" + "22" * 20
    winners = race(store, address, list(range(2, 14)))
    assert 13 in winners
    assert store.current(address) == 13


def test_store_uses_its_own_table_and_refuses_other_backends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = NonceStore(url, table_name="nonces_one"), NonceStore(url, table_name="nonces_two")
    one.advance(ADDRESS, 10)
    assert two.current(ADDRESS) == 1
    one.dispose()
    two.dispose()
    with pytest.raises(ValueError, match="SQLite or Postgres"):
        NonceStore("mysql://user@localhost/db")
    with pytest.raises(ValueError, match="lowercase letters"):
        NonceStore(url, table_name="x; drop table y")


def test_an_unusable_database_is_reported_without_its_url(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(NonceStoreUnavailable) as caught:
        NonceStore(f"sqlite:///{blocker / 'sub' / 'n.db'}")
    assert "the nonce store is unavailable" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
