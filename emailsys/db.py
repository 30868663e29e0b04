"""Database helpers the ORM lacks."""

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection
from django.db.models import Model


def rows_update(
    model: type[Model], changes: dict[int, dict[str, Any]], *, only_if: dict[str, Any] | None = None
) -> None:
    """Writes different values to different rows by primary key, in one round trip per set of columns.

    Django's `bulk_update` builds a `CASE WHEN` per column and row, which costs milliseconds of CPU for a batch
    of twenty rows; here each row is a plain `UPDATE … WHERE pk = %s` and psycopg sends them all at once
    (`executemany` runs in pipeline mode). `only_if` adds equality conditions (e.g. a state the row must still
    be in), so a concurrent change by someone else is not overwritten.
    """
    quote = connection.ops.quote_name
    meta = model._meta
    guards = [(meta.get_field(name), value) for name, value in (only_if or {}).items()]
    by_columns: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for pk, values in changes.items():
        if values:
            by_columns[tuple(sorted(values))].append(pk)
    for names, pks in by_columns.items():
        fields = [meta.get_field(name) for name in names]
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        conditions = " AND ".join([f"{quote(meta.pk.column)} = %s"] + [f"{quote(f.column)} = %s" for f, _ in guards])
        sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {conditions}"  # noqa: S608 (names from the model)
        guard_params = [field.get_db_prep_save(value, connection) for field, value in guards]
        params = [
            [field.get_db_prep_save(changes[pk][field.name], connection) for field in fields] + [pk] + guard_params
            for pk in pks
        ]
        with prepared_cursor() as cursor:
            cursor.executemany(sql, params)


def rows_insert_new(model: type[Model], rows: Sequence[Model], *, unique: Sequence[str]) -> list[Model]:
    """INSERT of many rows in one statement, skipping those whose `unique` columns exist already (ON CONFLICT DO
    NOTHING; a concurrent insert of the same key waits for the other transaction, then skips): the rows that were
    new, their primary keys set. Django's bulk_create(ignore_conflicts=True) cannot say which rows those were."""
    if not rows:
        return []
    quote = connection.ops.quote_name
    meta = model._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    key_fields = [meta.get_field(name) for name in unique]
    columns = ", ".join(quote(field.column) for field in fields)
    row_placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [field.get_db_prep_save(field.pre_save(row, add=True), connection) for row in rows for field in fields]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join([row_placeholder] * len(rows))} "  # noqa: S608 (names from the model)
        f"ON CONFLICT ({', '.join(quote(field.column) for field in key_fields)}) DO NOTHING "
        f"RETURNING {quote(meta.pk.column)}, {', '.join(quote(field.column) for field in key_fields)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = {tuple(found[1:]): found[0] for found in cursor.fetchall()}
    new = []
    for row in rows:
        key = tuple(field.get_db_prep_save(getattr(row, field.attname), connection) for field in key_fields)
        pk = inserted.pop(key, None)  # pop: a key given twice is new once
        if pk is not None:
            row.pk = pk
            row._state.adding = False
            new.append(row)
    return new


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A cursor whose statements become prepared statements of this connection's session: PostgreSQL plans each
    once per connection, not once per execution (for the statements every email repeats, a third of the
    database's CPU per email, measured by bench/send_throughput.py). Django's cursors bind parameters
    client-side and so never prepare; this one binds server-side, and goes through Django's cursor wrapper, so
    its queries are logged and counted like any. A plain Django cursor with `DB_PREPARED_STATEMENTS=false`
    (behind a pooler that cannot keep prepared statements: pgbouncer in transaction mode before 1.21)."""
    if not settings.DB_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    raw.connection.prepare_threshold = 0  # Django turns preparing off per connection; only these cursors ask
    with connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw) as cursor:
        yield cursor


def execute_prepared(sql: str, params: Mapping[str, Any] | Sequence[Any]) -> int:
    """One statement on a `prepared_cursor`: the row count."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        _log_statement(sql)
        return cursor.rowcount


def fetch_prepared(sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[tuple]:
    """One query on a `prepared_cursor`: its rows (reads repeated a few times a second, e.g. live snapshots)."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        _log_statement(sql)
        return cursor.fetchall()


def _log_statement(sql: str) -> None:
    if connection.queries_logged and connection.queries_log and connection.queries_log[-1]["sql"] is None:
        connection.queries_log[-1]["sql"] = sql  # Django renders only client-side bound statements


def connection_release_while_waiting() -> None:
    """With a connection pool, gives this thread's connection back while it waits on something slow (an SMTP
    server, an ESP's API; the next query takes one again). Without a pool, or inside a transaction, it does
    nothing: closing would mean a new connection per email."""
    if settings.DB_POOL_MAX_SIZE and not connection.in_atomic_block:
        connection.close()
