"""Per-address request nonces: strictly increasing, advanced by one atomic compare-and-set.

A signed request is accepted only if its nonce is greater than the stored one, and the store moves to
it in the same statement that checks it, so two requests carrying one nonce can never both pass.

Storage: the nonce is kept as text, zero-padded to 78 digits (2**256 has 78), compared with a bytewise
collation. For equal-width digit strings that order is numeric order, so the compare-and-set is a single
`UPDATE ... WHERE nonce < :new` on SQLite and Postgres alike. A NUMERIC column would not do: SQLite has
no exact type beyond 64-bit integers and turns larger values into floats, while clients send ms
timestamps today and anything up to 2**256 is a valid nonce tomorrow.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, create_engine, event, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from provider_api.params import NumberError, whole_number

MAX_NONCE = 2**256
WIDTH = len(str(MAX_NONCE))  # 78
# Ocean's /nonce answers 1 for an address it has never seen, and stores it.
INITIAL_NONCE = 1
_DIGITS = re.compile(r"[0-9]+")
# The decimal forms Ocean's Decimal comparison takes, in ASCII only: Decimal() itself also reads other
# scripts' digits (U+0661 U+0662 is 12) and underscores ("1_0").
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?")
_SQL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_TABLE = "provider_nonces"


class NonceStoreUnavailable(RuntimeError):
    """The database behind the store failed; the message names no query, parameter or credential."""


class NonceError(ValueError):
    """The nonce was refused; `message` is what the consumer is told."""

    def __init__(self, message: str, current: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.current = current


def parse_nonce(value: object) -> int:
    """A nonce as sent (JSON integer, or digits as text) as an int in [0, 2**256].

    Integral decimals ("12.0", 12.0) are accepted, as Ocean compares with Decimal; fractions,
    negatives, booleans, NaN, text and digits other than ASCII 0-9 are not. Digits alone go through
    the Provider's one number parser (provider_api.params.whole_number).
    """
    if isinstance(value, bool) or value is None:
        raise NonceError("the nonce must be a whole number")
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if len(text) > 2 * WIDTH:
            raise NonceError("the nonce must not exceed 2**256")
        if _DIGITS.fullmatch(text):
            try:
                number = whole_number(text, WIDTH)
            except NumberError:
                raise NonceError("the nonce must not exceed 2**256") from None
        elif not _DECIMAL.fullmatch(text):
            raise NonceError("the nonce must be a whole number")
        else:
            try:
                decimal = Decimal(text)
            except InvalidOperation:
                raise NonceError("the nonce must be a whole number") from None
            if not decimal.is_finite() or decimal != decimal.to_integral_value():
                raise NonceError("the nonce must be a whole number")
            if decimal.adjusted() >= WIDTH:  # checked before int(): "1e999999999" is short text
                raise NonceError("the nonce must not exceed 2**256")
            number = int(decimal)
    if number < 0:
        raise NonceError("the nonce must not be negative")
    if number > MAX_NONCE:
        raise NonceError("the nonce must not exceed 2**256")
    return number


def _encode(number: int) -> str:
    return str(number).zfill(WIDTH)


class NonceStore:
    """Nonces in a SQL database (SQLite embedded, Postgres in production), one table of its own.

    `schema` (Postgres) or `table_name` keep it apart from other tables, so tests can drop it. Under
    its default name the table is created by the Provider's migrations (provider_api.migrations), which
    bring the database to head here, before the first nonce is read.
    """

    def __init__(self, db_url: str, *, table_name: str = DEFAULT_TABLE, schema: str | None = None) -> None:
        if not _SQL_NAME.fullmatch(table_name) or (schema is not None and not _SQL_NAME.fullmatch(schema)):
            raise ValueError("table and schema names are lowercase letters, digits and _ (at most 63)")
        url = make_url(db_url)
        backend = url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"the nonce store runs on SQLite or Postgres, not {backend}")
        self._sqlite = backend == "sqlite"
        connect_args: dict[str, Any] = {}
        if self._sqlite:
            if schema is not None:
                raise ValueError("a schema is a Postgres feature; use table_name with SQLite")
            if url.database and url.database != ":memory:":
                try:
                    Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise NonceStoreUnavailable(
                        f"the nonce store is unavailable (cannot create its folder: {error.strerror})"
                    ) from None
            # Writers queue on SQLite's database lock instead of failing at once.
            connect_args["timeout"] = 30
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not self._sqlite)
        if self._sqlite:
            event.listen(self.engine, "connect", _sqlite_immediate_transactions)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        # Bytewise collation on Postgres: a locale collation could order digit strings otherwise.
        nonce_type = String(WIDTH).with_variant(String(WIDTH, collation="C"), "postgresql")
        self.table = Table(
            table_name,
            MetaData(schema=schema),
            Column("address", String(42), primary_key=True),
            Column("nonce", nonce_type, nullable=False),
        )
        self.schema = schema
        try:
            if table_name == DEFAULT_TABLE:
                # The Provider's tables (nonces, agreement claims) come from its alembic migrations.
                from provider_api import migrations

                migrations.upgrade(self.engine, schema)
            else:
                # Fallback for a table under another name (tests keep two stores in one database):
                # migrations create the Provider's tables under their fixed names only.
                with self.engine.begin() as conn:
                    if schema is not None:
                        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                    self.table.create(conn, checkfirst=True)
        except SQLAlchemyError as error:
            self.engine.dispose()
            raise NonceStoreUnavailable(_failure(error)) from error

    def dispose(self) -> None:
        self.engine.dispose()

    def _insert_if_absent(self, conn: Connection, address: str, value: str) -> int:
        values = {"address": address, "nonce": value}
        dialect_insert = sqlite_insert if self._sqlite else pg_insert
        return conn.execute(dialect_insert(self.table).values(values).on_conflict_do_nothing()).rowcount

    def _stored(self, conn: Connection, address: str) -> int | None:
        row = conn.execute(select(self.table.c.nonce).where(self.table.c.address == address)).first()
        return None if row is None else int(row[0])

    def current(self, address: str) -> int:
        """The stored nonce of `address` (any case); an unknown address gets 1, stored as Ocean does."""
        key = address.lower()
        try:
            with self.engine.begin() as conn:
                self._insert_if_absent(conn, key, _encode(INITIAL_NONCE))
                stored = self._stored(conn, key)
        except SQLAlchemyError as error:
            raise NonceStoreUnavailable(_failure(error)) from error
        assert stored is not None  # inserted above or already there
        return stored

    def advance(self, address: str, nonce: object) -> int:
        """Move `address` to `nonce` if it is greater than the stored one, else raise NonceError.

        The check and the write are one statement (or, for an address never seen, one insert that a
        concurrent insert makes fail), so of several requests with the same nonce exactly one wins.
        An unknown address counts as holding 1, as if it had asked /nonce first.
        """
        number = parse_nonce(nonce)
        key = address.lower()
        value = _encode(number)
        table = self.table
        try:
            with self.engine.begin() as conn:
                compare_and_set = (
                    update(table).where(table.c.address == key, table.c.nonce < value).values(nonce=value)
                )
                if conn.execute(compare_and_set).rowcount == 1:
                    return number
                if number > INITIAL_NONCE and self._insert_if_absent(conn, key, value) == 1:
                    return number
                # A concurrent first request for this address inserted its row after our update
                # found none (Postgres, read committed): compare against that row now.
                if conn.execute(compare_and_set).rowcount == 1:
                    return number
                stored = self._stored(conn, key)
        except SQLAlchemyError as error:
            raise NonceStoreUnavailable(_failure(error)) from error
        current = INITIAL_NONCE if stored is None else stored
        raise NonceError(
            f"Invalid signature expected nonce ({number}) > current nonce ({current}).", current=current
        )


def _failure(error: SQLAlchemyError) -> str:
    # SQLAlchemy's text carries the statement and its parameters; the class name is enough outside.
    return f"the nonce store is unavailable ({type(error).__name__})"


def _sqlite_immediate_transactions(dbapi_connection: Any, connection_record: Any) -> None:
    # pysqlite's own BEGIN handling is switched off so the `begin` hook below decides.
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(conn: Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock up front: a transaction that read first and wrote later
    # could otherwise hit SQLITE_BUSY at the upgrade instead of waiting its turn.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
