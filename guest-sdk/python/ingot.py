"""Write Ingot import processors in Python.

A processor is a module (``app.py``) with a class named ``Processor`` built into a WebAssembly
component with componentize-py against Ingot's ``wit/``::

    import ingot

    class Processor(ingot.Processor):
        def process_item(self, item):
            row = ingot.data(item)
            new_id = ingot.query_scalar("INSERT INTO greetings (name) VALUES ($1) RETURNING id", row["name"])
            ingot.info(f"greeted {row['name']}")
            return ingot.outcome("greetings", new_id)

Every hook but ``process_item`` has a default that accepts. Reject an item by raising what
``invalid``, ``retryable`` or ``skip`` return; a database error raised by ``execute`` or ``query``
propagates as the item's error (class-40 errors as retryable) unless you catch it.
"""

import json
from datetime import date, datetime
from decimal import Decimal

from componentize_py_types import Err
from wit_world.imports import context, types

__all__ = [
    "Processor", "data", "outcome", "invalid", "retryable", "skip",
    "execute", "query", "query_one", "query_scalar",
    "debug", "info", "warning", "error", "get_metadata", "set_metadata",
]


class Processor:
    """Base class with accepting defaults for every hook but ``process_item``."""

    def validate_batch(self, batch):
        pass

    def validate_item(self, item):
        pass

    def process_item(self, item):
        raise NotImplementedError("implement process_item")

    def on_batch_start(self, batch):
        pass

    def on_batch_complete(self, batch, success):
        pass

    def on_item_error(self, item, error):
        pass


def data(item):
    """The item's data: for CSV input, a dict keyed by the header row."""
    return json.loads(item.data)


def outcome(table, target_id=None, processed=None):
    """What ``process_item`` returns: the table written, the row's key, and the normalised record."""
    return types.Outcome(
        table,
        None if target_id is None else str(target_id),
        None if processed is None else json.dumps(processed, default=str),
    )


def _detail(message, code, field):
    return types.ErrorDetail(message, code, field)


def invalid(message, code=None, field=None):
    """Bad data, never retried: ``raise ingot.invalid("email is not valid", "invalid_email", "email")``."""
    return Err(types.ItemError_Invalid(_detail(message, code, field)))


def retryable(message, code=None, field=None):
    """A transient failure: the host tries the item again later."""
    return Err(types.ItemError_Retryable(_detail(message, code, field)))


def skip(message, code=None, field=None):
    """Deliberately not imported (e.g. a duplicate): the item ends ``skipped``."""
    return Err(types.ItemError_Skip(_detail(message, code, field)))


def _to_sql(value):
    if value is None:
        return types.SqlValue_Null()
    if isinstance(value, bool):
        return types.SqlValue_Boolean(value)
    if isinstance(value, int):
        return types.SqlValue_Int(value)
    if isinstance(value, float):
        return types.SqlValue_Float(value)
    if isinstance(value, Decimal):
        return types.SqlValue_Text(str(value))
    if isinstance(value, (datetime, date)):
        return types.SqlValue_Timestamp(value.isoformat())
    if isinstance(value, (bytes, bytearray)):
        return types.SqlValue_Bytes(bytes(value))
    if isinstance(value, (dict, list, tuple)):
        return types.SqlValue_Json(json.dumps(value, default=str))
    return types.SqlValue_Text(str(value))


def _from_sql(value):
    if isinstance(value, types.SqlValue_Null):
        return None
    if isinstance(value, types.SqlValue_Json):
        return json.loads(value.value)
    return value.value


def _raise_as_item_error(failure):
    sqlstate = failure.sqlstate or ""
    message = f"{failure.message} (SQLSTATE {sqlstate})" if sqlstate else failure.message
    if sqlstate.startswith("40"):
        raise retryable(message, "sql_error")
    raise invalid(message, "sql_error")


def execute(sql, *params):
    """Runs one data statement in the item's transaction; returns the rows it affected."""
    try:
        return context.execute(sql, [_to_sql(p) for p in params])
    except Err as e:
        _raise_as_item_error(e.value)


def query(sql, *params):
    """Runs one query in the item's transaction; returns a list of dicts keyed by column."""
    try:
        rows = context.query(sql, [_to_sql(p) for p in params])
    except Err as e:
        _raise_as_item_error(e.value)
    return [dict(zip(rows.columns, (_from_sql(v) for v in row))) for row in rows.rows]


def query_one(sql, *params):
    """The one row a query returns, or None."""
    rows = query(sql, *params)
    return rows[0] if rows else None


def query_scalar(sql, *params):
    """The first column of the one row a query returns, or None."""
    row = query_one(sql, *params)
    return None if row is None else next(iter(row.values()), None)


def _log(level, message, details):
    context.log(level, str(message), json.dumps(details, default=str) if details else None)


def debug(message, **details):
    _log(types.LogLevel.DEBUG, message, details)


def info(message, **details):
    _log(types.LogLevel.INFO, message, details)


def warning(message, **details):
    _log(types.LogLevel.WARNING, message, details)


def error(message, **details):
    _log(types.LogLevel.ERROR, message, details)


def get_metadata(key, default=None):
    """One key of the batch metadata."""
    value = context.get_metadata(key)
    return default if value is None else json.loads(value)


def set_metadata(key, value):
    """Sets one key of the batch metadata; inside an item it commits with the item."""
    context.set_metadata(key, json.dumps(value, default=str))
