"""Many rows into one table at once: what intake stores by the ten thousand.

SQLAlchemy's `executemany` compiles the statement, then builds and type-processes every
parameter of every row through its generic machinery: at 100,000 requests that was a
third of the time intake spent storing them. Here each column's bind processor (the
same conversion SQLAlchemy applies: UTC datetimes and money as text) is looked up once
per batch, and the rows go to the driver as plain tuples, in the caller's transaction:
`executemany` on SQLite, `COPY ... FROM STDIN` on PostgreSQL (psycopg's copy protocol,
one round trip for the whole batch instead of one statement per few hundred rows).

Only for rows that need nothing from the ORM: no relationships, no events, no
generated values but the primary key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (dicts with the same keys) into `table` on `conn`'s transaction.

    Every row must give every column that has a default, so nothing silently ends up
    NULL where the ORM would have filled a value in (a ValueError names the column).
    Other drivers than psycopg and sqlite3 get SQLAlchemy's own executemany.
    """
    if not rows:
        return
    names = list(rows[0])
    insert_values(conn, table, names, [tuple(row[n] for n in names) for row in rows])


def insert_values(conn: Connection, table: Table, names: Sequence[str],
                  rows: Sequence[Sequence[Any]]) -> None:
    """`insert_rows` for rows given as tuples, their values in the order of `names`.

    Intake stores a hundred thousand requests: building a dict for each only for it to
    be taken apart again cost more than the driver's work on some tables.
    """
    if not rows:
        return
    names = list(names)
    _check_columns(table, names)
    driver = (conn.dialect.name, conn.dialect.driver)
    if driver not in (("postgresql", "psycopg"), ("sqlite", "pysqlite")):
        conn.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])
        return
    values = _converted(rows, _converters(conn, table, names))
    quote = conn.dialect.identifier_preparer.quote
    columns = ", ".join(quote(n) for n in names)
    target = quote(table.name)
    dbapi = _driver_connection(conn)
    if driver[0] == "postgresql":
        sql = f"COPY {target} ({columns}) FROM STDIN"
        with _as_sqlalchemy_errors(conn, sql), dbapi.cursor() as cur, cur.copy(sql) as copy:
            for value in values:
                copy.write_row(value)
        return
    sql = f"INSERT INTO {target} ({columns}) VALUES ({', '.join('?' for _ in names)})"
    cur = dbapi.cursor()
    try:
        with _as_sqlalchemy_errors(conn, sql):
            cur.executemany(sql, values)
    finally:
        cur.close()


def update_values(conn: Connection, table: Table, key: str, names: Sequence[str],
                  rows: Sequence[Sequence[Any]]) -> None:
    """`UPDATE table SET names... WHERE key = ...` for many rows, each `(key, *values)`.

    Intake writes back what repeat contacts filled in on stored cases: the ORM's flush
    spent about 2 s on 10,000 of them (an UPDATE per row through its unit of work). On
    PostgreSQL the rows go as one statement over arrays (`UPDATE ... FROM unnest(...)`),
    on SQLite through `executemany`. Each row's key must appear once.
    """
    if not rows:
        return
    names = list(names)
    _check_known(table, [key, *names])
    driver = (conn.dialect.name, conn.dialect.driver)
    if driver not in (("postgresql", "psycopg"), ("sqlite", "pysqlite")):
        statement = update(table).where(table.c[key] == bindparam("_key")).values(
            {n: bindparam(n) for n in names})
        conn.execute(statement, [{"_key": row[0], **dict(zip(names, row[1:], strict=True))}
                                 for row in rows])
        return
    values = _converted(rows, _converters(conn, table, [key, *names]))
    quote = conn.dialect.identifier_preparer.quote
    dbapi = _driver_connection(conn)
    if driver[0] == "postgresql":
        types = [table.c[n].type.compile(dialect=conn.dialect) for n in [key, *names]]
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        sql = (f"UPDATE {quote(table.name)} AS t SET "
               + ", ".join(f"{quote(n)} = v.{quote(n)}" for n in names)
               + f" FROM unnest({arrays}) AS v({', '.join(quote(n) for n in [key, *names])})"
               f" WHERE t.{quote(key)} = v.{quote(key)}")
        with _as_sqlalchemy_errors(conn, sql), dbapi.cursor() as cur:
            cur.execute(sql, [list(column) for column in zip(*values, strict=True)])
        return
    sql = (f"UPDATE {quote(table.name)} SET " + ", ".join(f"{quote(n)} = ?" for n in names)
           + f" WHERE {quote(key)} = ?")
    cur = dbapi.cursor()
    try:
        with _as_sqlalchemy_errors(conn, sql):
            cur.executemany(sql, [(*row[1:], row[0]) for row in values])
    finally:
        cur.close()


def _converted(rows: Sequence[Sequence[Any]], convert: list[Callable[[Any], Any] | None]
               ) -> Sequence[Sequence[Any]]:
    """The rows with each value as its column's bind processor makes it (only the columns
    that have one are touched: most are text and integers, which go as they are)."""
    width = len(convert)
    if any(len(row) != width for row in rows):
        raise ValueError(f"every row must have {width} values, one for each column named")
    which = [(i, f) for i, f in enumerate(convert) if f is not None]
    if not which:
        return rows
    out: list[list[Any]] = []
    for row in rows:
        values = list(row)
        for i, f in which:
            values[i] = f(values[i])
        out.append(values)
    return out


def _driver_connection(conn: Connection) -> Any:
    """The driver's own connection, in `conn`'s transaction."""
    dbapi = conn.connection.driver_connection
    if dbapi is None:  # pragma: no cover - a live Connection always has one
        raise RuntimeError("the database connection is closed")
    return dbapi


@contextmanager
def _as_sqlalchemy_errors(conn: Connection, sql: str) -> Iterator[None]:
    """The driver's errors as SQLAlchemy raises them for its own statements.

    Callers catch `sqlalchemy.exc.IntegrityError` (a batch that lost a race to another
    intake is planned again); the driver's own UniqueViolation would pass them by.
    """
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        raise DBAPIError.instance(sql, None, exc, base, dialect=conn.dialect) from exc


def _check_known(table: Table, names: list[str]) -> None:
    unknown = [n for n in names if n not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}")


def _check_columns(table: Table, names: list[str]) -> None:
    _check_known(table, names)
    missing = [c.name for c in table.c if c.name not in names and not c.primary_key
               and (c.default is not None or c.server_default is not None)]
    if missing:
        raise ValueError(f"rows for {table.name} lack {', '.join(missing)}, which have "
                         f"defaults: give them explicitly")


def _converters(conn: Connection, table: Table, names: list[str]
                ) -> list[Callable[[Any], Any] | None]:
    """Each column's bind processor for this dialect (None: the value goes as it is)."""
    dialect = conn.dialect
    found = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
    return [_last_one_kept(f) if f else None for f in found]


def _last_one_kept(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert`, answering at once for the value it was just given (the same object).

    A batch's rows share their time stamps: one datetime, converted once, not per row.
    The values converted (datetimes, decimals, text) are immutable.
    """
    last: list[Any] = [_NOTHING, None]

    def cached(value: Any) -> Any:
        if value is not last[0]:
            last[0], last[1] = value, convert(value)
        return last[1]

    return cached


_NOTHING = object()


def new_ids(conn: Connection, table: Table, count: int) -> list[int] | None:
    """`count` new primary keys for `table`, taken from its sequence, ascending; None where
    the database gives keys only as rows are inserted (SQLite).

    On PostgreSQL a batch's new cases then go in with their ids: finding them again by
    their unique key afterwards cost a query over 5,000 keys a batch.
    """
    if conn.dialect.name != "postgresql" or count < 1:
        return None
    (key,) = table.primary_key.columns
    sql = "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)"
    dbapi = _driver_connection(conn)
    with _as_sqlalchemy_errors(conn, sql), dbapi.cursor() as cur:
        cur.execute(sql, [table.name, key.name, count])
        return sorted(row[0] for row in cur.fetchall())


def find_in(conn: Connection, table: Table, out: Sequence[str], column: str,
            values: Sequence[Any], **equal: Any) -> list[tuple[Any, ...]]:
    """`SELECT out FROM table WHERE column IN values [AND k = v ...]`, without an ORM.

    One query on PostgreSQL (`= ANY` of an array), chunks of CHUNK values on SQLite;
    for lookups of plain text and integer columns, whose values need no conversion (the
    SQL is built from the table's own column names, never from the values).
    """
    if not values:
        return []
    driver = (conn.dialect.name, conn.dialect.driver)
    quote = conn.dialect.identifier_preparer.quote
    head = f"SELECT {', '.join(quote(c) for c in out)} FROM {quote(table.name)} WHERE "
    extra = "".join(f" AND {quote(k)} = {{mark}}" for k in equal)
    dbapi = _driver_connection(conn)
    if driver == ("postgresql", "psycopg"):
        sql = head + f"{quote(column)} = ANY(%s)" + extra.format(mark="%s")
        with _as_sqlalchemy_errors(conn, sql), dbapi.cursor() as cur:
            cur.execute(sql, [list(values), *equal.values()])
            return [tuple(row) for row in cur.fetchall()]
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(values), CHUNK):
        chunk = list(values[start:start + CHUNK])
        if driver != ("sqlite", "pysqlite"):  # another driver: SQLAlchemy's own IN
            query = select(*(table.c[c] for c in out)).where(
                table.c[column].in_(chunk), *(table.c[k] == v for k, v in equal.items()))
            found += [tuple(row) for row in conn.execute(query)]
            continue
        sql = head + f"{quote(column)} IN ({', '.join('?' for _ in chunk)})" \
            + extra.format(mark="?")
        cur = dbapi.cursor()
        try:
            with _as_sqlalchemy_errors(conn, sql):
                cur.execute(sql, [*chunk, *equal.values()])
                found += [tuple(row) for row in cur.fetchall()]
        finally:
            cur.close()
    return found


CHUNK = 500  # bound parameters per IN (...): old SQLite builds allow 999 in all
