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
propagates as the item's error (class-40 errors as retryable) unless you catch it. Any other
exception fails the item with code ``exception`` and ``Class: message``; its traceback goes to the
item's log.

The validation kit reads fields with one rule each, failing with the codes and messages of the
Rust SDK (``missing_<field>``, ``invalid_<field>``; see README)::

    row = ingot.fields(item)
    order_id = row.get("Order ID").upper().pattern("[A-Z0-9-]{3,20}").text()
    total = row.get("Total").min(0).decimal(2)          # a Decimal, exactly as written
    notes = row.get("Notes").max_len(500).optional().text()  # None when blank
"""

import json
import re
import traceback
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from componentize_py_types import Err
from wit_world.imports import context, types

__all__ = [
    "Processor", "data", "outcome", "invalid", "retryable", "skip", "fields", "Fields", "Field",
    "execute", "query", "query_one", "query_scalar", "upsert",
    "debug", "info", "warning", "error", "get_metadata", "set_metadata",
]


class Processor:
    """Base class with accepting defaults for every hook but ``process_item``.

    A subclass's hooks are wrapped so that an exception other than the ones ``invalid``,
    ``retryable`` and ``skip`` make reads as the processor's own: the item fails with code
    ``exception``, the traceback is logged, and the instance keeps serving items.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _ITEM_HOOKS + _BATCH_HOOKS + ("on_item_error",):
            hook = cls.__dict__.get(name)
            if callable(hook) and not getattr(hook, "_ingot_wrapped", False):
                setattr(cls, name, _guarded(name, hook))

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


_ITEM_HOOKS = ("validate_item", "process_item")
_BATCH_HOOKS = ("validate_batch", "on_batch_start", "on_batch_complete")


def _guarded(name, hook):
    def guarded(self, *args):
        try:
            return hook(self, *args)
        except Err:
            raise
        except Exception as e:  # noqa: BLE001 - every exception of the processor is reported
            summary = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            # The first frame is this wrapper: the processor's own frames start after it.
            frames = traceback.format_exception(type(e), e, e.__traceback__.tb_next)
            context.log(types.LogLevel.ERROR, "".join(frames).rstrip(), json.dumps({"hook": name, "exception": type(e).__name__}))
            if name in _ITEM_HOOKS:
                raise Err(types.ItemError_Invalid(types.ErrorDetail(summary, "exception", None)))
            if name in _BATCH_HOOKS:
                raise Err(f"{name} raised {summary}")
            return None

    guarded._ingot_wrapped = True
    guarded.__name__ = name
    guarded.__doc__ = hook.__doc__
    return guarded


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
    if isinstance(value, datetime):
        return types.SqlValue_Timestamp(value.isoformat())
    if isinstance(value, date):
        # A day, not a moment: as text PostgreSQL reads as a date, never shifted by a time zone.
        return types.SqlValue_Text(value.isoformat())
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


def _quote(name):
    return '"' + name.replace('"', '""') + '"'


def upsert(table, key, record):
    """Inserts ``record`` (a dict of column: value) into ``table``, or updates the row whose
    ``key`` column has the same value; returns the row as it is now (a dict)."""
    if not isinstance(record, dict):
        raise invalid(f"a record to upsert into {table} must be a dict", "sql_error")
    if key not in record:
        raise invalid(f"the record to upsert into {table} has no {key!r} field", "sql_error")
    columns = list(record)
    updates = [f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in columns if c != key] or [
        f"{_quote(key)} = EXCLUDED.{_quote(key)}"  # nothing to change: still return the row
    ]
    sql = (
        f"INSERT INTO {'.'.join(_quote(t) for t in table.split('.'))} "
        f"({', '.join(_quote(c) for c in columns)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) "
        f"ON CONFLICT ({_quote(key)}) DO UPDATE SET {', '.join(updates)} RETURNING *"
    )
    return query_one(sql, *record.values())


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


# ---- The validation kit: the same rules, codes and messages as the Rust SDK's fields module. ----


class _Written(str):
    """A JSON number as written in the item, so that no digit is lost to a float."""


def fields(item):
    """The item's fields, to read with the validation kit: ``fields(item).get("Order ID")``."""
    return Fields(item)


def _loose(name):
    return "".join(c for c in name if c.isalnum()).lower()


def _snake(name):
    return "_".join(w.lower() for w in re.split(r"[\W_]+", name) if w)


class Fields:
    """An item's columns; a column is found by its exact name, else by the one name that is the
    same ignoring case, spaces and punctuation ("Order ID" finds order_id, ORDER-ID, OrderId)."""

    def __init__(self, item):
        text = item.data if hasattr(item, "data") else json.dumps(item)
        try:
            self.columns = json.loads(text, parse_float=_Written, parse_int=_Written)
        except ValueError as e:
            raise invalid(f"item data is not valid JSON: {e}", "invalid_data")
        if not isinstance(self.columns, dict):
            raise invalid("item data is not an object of named fields", "invalid_data")

    def get(self, name):
        """Field ``name``, to check with rules and end with a reader (``.text()``, ``.email()``…)."""
        return Field(self, name)

    def lookup(self, name):
        if name in self.columns:
            return self.columns[name]
        wanted = _loose(name)
        found = [k for k in self.columns if _loose(k) == wanted]
        if len(found) > 1:
            raise invalid(
                f"{name} matches more than one column: {', '.join(json.dumps(k) for k in found)}",
                "invalid_data",
                name,
            )
        return self.columns[found[0]] if found else None


_PATTERNS = {}


class Field:
    """One field and its rules; end with a reader. Rules return the field, so they chain."""

    def __init__(self, fields, name):
        self._fields, self.name = fields, name
        self._upper = self._lower = self._comma = self._optional = False
        self._min_len = self._max_len = self._pattern = self._min = self._max = None
        self._format = self._code = self._missing_code = None

    def _set(self, attr, value):
        setattr(self, attr, value)
        return self

    def upper(self):
        """Upper-cases the value before it is checked."""
        return self._set("_upper", True)

    def lower(self):
        """Lower-cases the value before it is checked."""
        return self._set("_lower", True)

    def min_len(self, n):
        return self._set("_min_len", n)

    def max_len(self, n):
        return self._set("_max_len", n)

    def pattern(self, regex):
        """The whole value must match this regular expression (after upper/lower)."""
        return self._set("_pattern", regex)

    def min(self, bound):
        """A number at least ``bound``, compared exactly (``min("0.01")``, ``min(0)``)."""
        return self._set("_min", bound)

    def max(self, bound):
        return self._set("_max", bound)

    def decimal_comma(self):
        """Decimals are written with a comma (``12,50``); a dot is then refused."""
        return self._set("_comma", True)

    def format(self, spec):
        """Dates and timestamps in this format instead of ISO 8601: ``%Y`` (4 digits),
        ``%m %d %H %M %S`` (1 or 2 digits), ``%%`` and literals, e.g. ``"%d/%m/%Y"``."""
        return self._set("_format", spec)

    def code(self, code):
        """The code of an invalid value, instead of ``invalid_<field>``."""
        return self._set("_code", code)

    def missing_code(self, code):
        """The code of a missing value, instead of ``missing_<field>``."""
        return self._set("_missing_code", code)

    def optional(self):
        """Allows the value to be missing or blank: the reader then returns None."""
        return self._set("_optional", True)

    def _missing(self):
        code = self._missing_code or f"missing_{_snake(self.name)}"
        return invalid(f"{self.name} is required", code, self.name)

    def _invalid(self, rule):
        code = self._code or f"invalid_{_snake(self.name)}"
        return invalid(f"{self.name} {rule}", code, self.name)

    def _value(self):
        value = self._fields.lookup(self.name)
        if value is None:
            return None
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            raise self._invalid("must be a single value, not a list or object")
        text = str(value).strip()
        if not text:
            return None
        if self._upper:
            text = text.upper()
        if self._lower:
            text = text.lower()
        if self._min_len is not None and len(text) < self._min_len:
            raise self._invalid(f"must be at least {self._min_len} characters")
        if self._max_len is not None and len(text) > self._max_len:
            raise self._invalid(f"must be at most {self._max_len} characters")
        if self._pattern is not None:
            compiled = _PATTERNS.get(self._pattern)
            if compiled is None:
                try:
                    compiled = _PATTERNS[self._pattern] = re.compile(self._pattern)
                except re.error as e:
                    raise invalid(
                        f"the processor's pattern for {self.name} is not a regular expression: {e}",
                        "invalid_pattern",
                    )
            if not compiled.fullmatch(text):
                raise self._invalid(f"does not match the expected pattern {self._pattern}")
        return text

    def _read(self, parse):
        text = self._value()
        if text is None:
            if self._optional:
                return None
            raise self._missing()
        return parse(text)

    def text(self):
        """The value as text, trimmed."""
        return self._read(lambda t: t)

    def email(self):
        """An email address, lower-cased."""
        def parse(text):
            email = text.lower()
            if not _is_email(email):
                raise self._invalid("is not a valid email address")
            return email
        return self._read(parse)

    def one_of(self, choices):
        """One of ``choices`` (after upper/lower)."""
        def parse(text):
            if text not in choices:
                raise self._invalid(f"must be one of {', '.join(choices)}")
            return text
        return self._read(parse)

    def boolean(self):
        """true/false, yes/no, y/n or 1/0, in any case."""
        def parse(text):
            lowered = text.lower()
            if lowered in ("true", "yes", "y", "1"):
                return True
            if lowered in ("false", "no", "n", "0"):
                return False
            raise self._invalid("must be true or false")
        return self._read(parse)

    def _bounded(self, number):
        for bound, at_least in ((self._min, True), (self._max, False)):
            if bound is None:
                continue
            try:
                limit = Decimal(str(bound))
            except InvalidOperation:
                raise invalid(f"the processor's bound {bound!r} for {self.name} is not a number", "invalid_bound")
            if at_least and number < limit:
                raise self._invalid(f"must be at least {bound}")
            if not at_least and number > limit:
                raise self._invalid(f"must be at most {bound}")

    def integer(self):
        """A whole number (an optional sign and digits), within min and max."""
        def parse(text):
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise self._invalid("must be a whole number")
            n = int(text)
            if not -(2**63) <= n < 2**63:
                raise self._invalid("must be a whole number")
            self._bounded(Decimal(n))
            return n
        return self._read(parse)

    def decimal(self, scale):
        """A Decimal with at most ``scale`` decimal places, within min and max, written with a dot
        (or a comma, with ``decimal_comma``); kept exactly as written."""
        def parse(text):
            sep, wrong = (",", "must be a number with a decimal comma") if self._comma else (
                ".", "must be a number with a dot as decimal separator")
            match = re.fullmatch(r"([+-]?)([0-9]+)(?:" + re.escape(sep) + r"([0-9]+))?", text)
            if not match:
                raise self._invalid(wrong)
            sign, whole, fraction = match.groups()
            if fraction is not None and len(fraction) > scale:
                raise self._invalid(f"must have at most {scale} decimal places")
            number = Decimal(f"{'-' if sign == '-' else ''}{whole}" + (f".{fraction}" if fraction is not None else ""))
            self._bounded(number)
            return number
        return self._read(parse)

    def date(self):
        """A day of the calendar (a ``datetime.date``), as YYYY-MM-DD or the ``format``."""
        def parse(text):
            form = self._format or "YYYY-MM-DD"
            parts = _strptime(self._format, text) if self._format else _iso_date(text)
            if parts is None or None in (parts.get("Y"), parts.get("m"), parts.get("d")):
                raise self._invalid(f"must be a date as {form}")
            return self._day(parts)
        return self._read(parse)

    def timestamp(self):
        """A date and time as ISO 8601 text ``YYYY-MM-DDTHH:MM:SS`` (with the fraction and zone
        the value had), from ``YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH:MM]`` or the ``format``."""
        def parse(text):
            form = self._format or "YYYY-MM-DDTHH:MM:SS"
            if self._format:
                parts, rest = _strptime(self._format, text), ""
            else:
                match = _ISO_TIMESTAMP.fullmatch(text)
                # A fraction only after seconds.
                if not match or (match[7] and match[6] is None):
                    raise self._invalid(f"must be a timestamp as {form}")
                parts = {"Y": int(match[1]), "m": int(match[2]), "d": int(match[3]),
                         "H": int(match[4]), "M": int(match[5]), "S": int(match[6] or 0)}
                rest = (match[7] or "") + ("Z" if match[8] in ("Z", "z") else (match[8] or ""))
            if parts is None or None in (parts.get("Y"), parts.get("m"), parts.get("d")):
                raise self._invalid(f"must be a timestamp as {form}")
            hour, minute, second = parts.get("H") or 0, parts.get("M") or 0, parts.get("S") or 0
            if hour > 23 or minute > 59 or second > 59:
                raise self._invalid(f"must be a timestamp as {form}")
            day = self._day(parts)
            return f"{day.isoformat()}T{hour:02}:{minute:02}:{second:02}{rest}"
        return self._read(parse)

    def _day(self, parts):
        try:
            return date(parts["Y"], parts["m"], parts["d"])
        except ValueError:
            raise self._invalid("is not a day of the calendar")


_ISO_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?(\.[0-9]{1,9})?"
    r"([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
)


def _iso_date(text):
    match = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text)
    return match and {"Y": int(match[1]), "m": int(match[2]), "d": int(match[3])}


def _strptime(spec, text):
    """Reads all of ``text`` in ``spec`` (%Y %m %d %H %M %S %% and literals); None if it does not fit."""
    parts, at, i = {}, 0, 0
    while i < len(spec):
        c = spec[i]
        i += 1
        if c != "%":
            if not text.startswith(c, at):
                return None
            at += 1
            continue
        if i >= len(spec):
            return None
        directive = spec[i]
        i += 1
        if directive == "%":
            if not text.startswith("%", at):
                return None
            at += 1
            continue
        if directive not in "YmdHMS":
            return None
        width = (4, 4) if directive == "Y" else (1, 2)
        match = re.compile(f"[0-9]{{{width[0]},{width[1]}}}").match(text, at)
        if not match:
            return None
        parts[directive] = int(match[0])
        at = match.end()
    return parts if at == len(text) else None


def _is_email(s):
    if len(s) > 254 or any(c.isspace() for c in s) or s.count("@") != 1:
        return False
    local, domain = s.split("@")
    if not local or "." not in domain:
        return False
    return all(
        label and not label.startswith("-") and not label.endswith("-")
        and all(c.isalnum() or c == "-" for c in label)
        for label in domain.split(".")
    )
