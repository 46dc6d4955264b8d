// Write Ingot import processors in JavaScript (componentize-js). Beside your app.js:
//
//   import * as ingot from './ingot.js';
//
//   export const processor = ingot.processor({
//     processItem(item) {
//       const row = ingot.fields(item);
//       const email = row.get('email').email();
//       const saved = ingot.upsert('customers', 'email', { email, name: row.get('name').text() });
//       return ingot.outcome('customers', saved.id, { email });
//     },
//   });
//
// `processor` fills in the hooks you leave out (they accept) and turns an exception into the
// item's failure: code `exception`, message `TypeError: …`, the stack in the item's log. Throw
// what `invalid`, `retryable` or `skip` return to reject an item yourself. SQL parameters are
// plain values (string, number, bigint, boolean, null, Date, object as JSON): no `{tag, val}`.
// The validation kit (`fields`) has the Rust SDK's rules, codes and messages (see README).

import * as context from 'ingot:processor/context@0.1.0';

const detail = (message, code, field) => ({ message, code: code ?? undefined, field: field ?? undefined });
/** Bad data, never retried: `throw ingot.invalid('email is not valid', 'invalid_email', 'email')`. */
export const invalid = (message, code, field) => ({ tag: 'invalid', val: detail(message, code, field) });
/** A transient failure: the host tries the item again later. */
export const retryable = (message, code, field) => ({ tag: 'retryable', val: detail(message, code, field) });
/** Deliberately not imported (e.g. a duplicate): the item ends `skipped`. */
export const skip = (message, code, field) => ({ tag: 'skip', val: detail(message, code, field) });

const isItemError = (e) =>
  e !== null && typeof e === 'object' && ['invalid', 'retryable', 'skip'].includes(e.tag) && typeof e.val === 'object';

const ITEM_HOOKS = ['validateItem', 'processItem'];
const BATCH_HOOKS = ['validateBatch', 'onBatchStart', 'onBatchComplete'];

const describe = (e) => (e instanceof Error ? (e.message ? `${e.name}: ${e.message}` : e.name) : `thrown: ${String(e)}`);

/** The processor export: your hooks, the others accepting, every exception reported as the item's. */
export function processor(hooks) {
  if (typeof hooks?.processItem !== 'function') throw new Error('ingot.processor needs a processItem(item) hook');
  const guard = (name) => (...args) => {
    const hook = hooks[name];
    if (typeof hook !== 'function') return undefined;
    try {
      return hook.apply(hooks, args);
    } catch (e) {
      if (ITEM_HOOKS.includes(name) && isItemError(e)) throw e;
      if (BATCH_HOOKS.includes(name) && typeof e === 'string') throw e;
      // V8 starts a stack with the message, SpiderMonkey (componentize-js) with the frames.
      const frames = e instanceof Error && typeof e.stack === 'string' ? e.stack : '';
      const stack = frames.startsWith(describe(e)) ? frames : `${describe(e)}\n${frames}`;
      context.log('error', stack.trimEnd(), JSON.stringify({ hook: name, exception: e?.name ?? typeof e }));
      if (ITEM_HOOKS.includes(name)) throw invalid(describe(e), 'exception');
      if (BATCH_HOOKS.includes(name)) throw `${name} raised ${describe(e)}`;
      return undefined;
    }
  };
  return Object.fromEntries(
    [...ITEM_HOOKS, ...BATCH_HOOKS, 'onItemError'].map((name) => [name, guard(name)]),
  );
}

/** The item's data: for CSV input, an object keyed by the header row. */
export const data = (item) => JSON.parse(item.data);

const jsonText = (value) => JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v));

/** What `processItem` returns: the table written, the row's key, and the normalised record. */
export const outcome = (table, targetId, processed) => ({
  targetTable: table ?? undefined,
  targetId: targetId === undefined || targetId === null ? undefined : String(targetId),
  processedData: processed === undefined ? undefined : jsonText(processed),
});

function toSql(value) {
  if (value === null || value === undefined) return { tag: 'null' };
  switch (typeof value) {
    case 'boolean':
      return { tag: 'boolean', val: value };
    case 'bigint':
      return { tag: 'int', val: value };
    case 'number':
      return Number.isSafeInteger(value) ? { tag: 'int', val: BigInt(value) } : { tag: 'float', val: value };
    case 'string':
      return { tag: 'text', val: value };
    default:
      if (value instanceof Date) return { tag: 'timestamp', val: value.toISOString() };
      if (value instanceof Uint8Array) return { tag: 'bytes', val: value };
      return { tag: 'json', val: jsonText(value) };
  }
}

function fromSql(value) {
  switch (value.tag) {
    case 'null':
      return null;
    case 'int':
      return value.val >= BigInt(Number.MIN_SAFE_INTEGER) && value.val <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value.val) : value.val;
    case 'json':
      return JSON.parse(value.val);
    default:
      return value.val;
  }
}

// A database error fails the item (class-40 errors, such as a deadlock, as retryable).
function sqlCall(call) {
  try {
    return call();
  } catch (e) {
    const failure = e?.payload;
    if (!failure || typeof failure.message !== 'string') throw e;
    const message = failure.sqlstate ? `${failure.message} (SQLSTATE ${failure.sqlstate})` : failure.message;
    throw (failure.sqlstate ?? '').startsWith('40') ? retryable(message, 'sql_error') : invalid(message, 'sql_error');
  }
}

/** Runs one data statement in the item's transaction; returns the rows it affected (a number). */
export const execute = (sql, ...params) => Number(sqlCall(() => context.execute(sql, params.map(toSql))));

/** Runs one query in the item's transaction; returns its rows as objects keyed by column. */
export function query(sql, ...params) {
  const rows = sqlCall(() => context.query(sql, params.map(toSql)));
  return rows.rows.map((row) => Object.fromEntries(row.map((v, i) => [rows.columns[i], fromSql(v)])));
}

/** The one row a query returns, or null. */
export const queryOne = (sql, ...params) => query(sql, ...params)[0] ?? null;

/** The first column of the one row a query returns, or null. */
export function queryScalar(sql, ...params) {
  const row = queryOne(sql, ...params);
  return row === null ? null : (Object.values(row)[0] ?? null);
}

const quote = (name) => `"${name.replaceAll('"', '""')}"`;

/** Inserts `record` into `table`, or updates the row whose `key` column has its value; returns the row. */
export function upsert(table, key, record) {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) {
    throw invalid(`a record to upsert into ${table} must be an object`, 'sql_error');
  }
  if (!(key in record)) throw invalid(`the record to upsert into ${table} has no "${key}" field`, 'sql_error');
  const columns = Object.keys(record);
  const updates = columns.filter((c) => c !== key).map((c) => `${quote(c)} = EXCLUDED.${quote(c)}`);
  // Nothing to change: still return the row that is there.
  if (updates.length === 0) updates.push(`${quote(key)} = EXCLUDED.${quote(key)}`);
  const sql =
    `INSERT INTO ${table.split('.').map(quote).join('.')} (${columns.map(quote).join(', ')}) ` +
    `VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')}) ` +
    `ON CONFLICT (${quote(key)}) DO UPDATE SET ${updates.join(', ')} RETURNING *`;
  return queryOne(sql, ...Object.values(record));
}

const logAt = (level) => (message, details) =>
  context.log(level, String(message), details === undefined ? undefined : jsonText(details));
export const debug = logAt('debug');
export const info = logAt('info');
export const warning = logAt('warning');
export const error = logAt('error');

/** One key of the batch metadata, or `fallback`. */
export function getMetadata(key, fallback = null) {
  const value = context.getMetadata(key);
  return value === undefined ? fallback : JSON.parse(value);
}

/** Sets one key of the batch metadata; inside an item it commits with the item. */
export const setMetadata = (key, value) => context.setMetadata(key, jsonText(value));

// ---- The validation kit: the same rules, codes and messages as the Rust SDK's fields module. ----

/** A JSON number as written in the item, so no digit is lost to a float. */
class Written {
  constructor(text) {
    this.text = text;
  }
}

// Reads the item's top-level object, keeping each number's text; nested values are parsed whole.
function readObject(text) {
  let at = 0;
  const fail = (what) => {
    throw invalid(`item data is not valid JSON: ${what} at character ${at}`, 'invalid_data');
  };
  const space = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at])) at++;
  };
  const endOfString = (from) => {
    let i = from + 1;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    if (i >= text.length) fail('an unterminated string');
    return i + 1;
  };
  const value = () => {
    space();
    const start = at;
    if (text[at] === '"') {
      at = endOfString(at);
    } else if (text[at] === '{' || text[at] === '[') {
      let depth = 0;
      do {
        if (text[at] === '"') {
          at = endOfString(at);
          continue;
        }
        if (text[at] === '{' || text[at] === '[') depth++;
        if (text[at] === '}' || text[at] === ']') depth--;
        at++;
      } while (depth > 0 && at < text.length);
    } else {
      while (at < text.length && !',}] \t\n\r'.includes(text[at])) at++;
      const literal = text.slice(start, at);
      if (/^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(literal)) return new Written(literal);
    }
    try {
      return JSON.parse(text.slice(start, at));
    } catch (e) {
      return fail(e.message);
    }
  };
  space();
  if (text[at] !== '{') throw invalid('item data is not an object of named fields', 'invalid_data');
  at++;
  const columns = new Map();
  space();
  if (text[at] === '}') return columns;
  for (;;) {
    space();
    if (text[at] !== '"') fail('a field name expected');
    const key = value();
    space();
    if (text[at++] !== ':') fail('":" expected');
    columns.set(key, value());
    space();
    const next = text[at++];
    if (next === '}') break;
    if (next !== ',') fail('"," or "}" expected');
  }
  space();
  if (at < text.length) fail('text after the object');
  return columns;
}

// A letter or digit; without regex Unicode classes, which componentize-js's engine lacks.
const isAlnum = (c) => (c >= '0' && c <= '9') || c.toLowerCase() !== c.toUpperCase();
const loose = (name) => [...name].filter(isAlnum).join('').toLowerCase();
const snake = (name) =>
  [...name]
    .map((c) => (isAlnum(c) ? c.toLowerCase() : ' '))
    .join('')
    .split(' ')
    .filter(Boolean)
    .join('_');

/** The item's fields, to read with the validation kit: `fields(item).get('Order ID').text()`. */
export const fields = (item) => new Fields(item);

export class Fields {
  constructor(item) {
    this.columns = readObject(typeof item === 'string' ? item : (item?.data ?? JSON.stringify(item)));
  }

  /** Field `name`: found by its exact name, else by the one name equal ignoring case, spaces and punctuation. */
  get(name) {
    return new Field(this, name);
  }

  lookup(name) {
    if (this.columns.has(name)) return this.columns.get(name);
    const wanted = loose(name);
    const found = [...this.columns.keys()].filter((k) => loose(k) === wanted);
    if (found.length > 1) {
      throw invalid(`${name} matches more than one column: ${found.map((k) => JSON.stringify(k)).join(', ')}`, 'invalid_data', name);
    }
    return found.length ? this.columns.get(found[0]) : undefined;
  }
}

const patterns = new Map();

/** One field and its rules; end with a reader (text, email, oneOf, boolean, integer, decimal, date, timestamp). */
export class Field {
  constructor(fields, name) {
    this.fields = fields;
    this.name = name;
    this.rules = {};
  }

  set(rule, value) {
    this.rules[rule] = value;
    return this;
  }
  /** Upper-cases the value before it is checked. */
  upper() {
    return this.set('upper', true);
  }
  /** Lower-cases the value before it is checked. */
  lower() {
    return this.set('lower', true);
  }
  minLen(n) {
    return this.set('minLen', n);
  }
  maxLen(n) {
    return this.set('maxLen', n);
  }
  /** The whole value must match this regular expression (a string, after upper/lower). */
  pattern(regex) {
    return this.set('pattern', regex);
  }
  /** A number at least `bound`, compared exactly (`min('0.01')`, `min(0)`). */
  min(bound) {
    return this.set('min', bound);
  }
  max(bound) {
    return this.set('max', bound);
  }
  /** Decimals are written with a comma (`12,50`); a dot is then refused. */
  decimalComma() {
    return this.set('comma', true);
  }
  /** Dates and timestamps in this format: `%Y` (4 digits), `%m %d %H %M %S` (1-2 digits), `%%`, literals. */
  format(spec) {
    return this.set('format', spec);
  }
  /** The code of an invalid value, instead of `invalid_<field>`. */
  code(code) {
    return this.set('code', code);
  }
  /** The code of a missing value, instead of `missing_<field>`. */
  missingCode(code) {
    return this.set('missingCode', code);
  }
  /** Allows the value to be missing or blank: the reader then returns null. */
  optional() {
    return this.set('optional', true);
  }

  missing() {
    return invalid(`${this.name} is required`, this.rules.missingCode ?? `missing_${snake(this.name)}`, this.name);
  }
  invalid(rule) {
    return invalid(`${this.name} ${rule}`, this.rules.code ?? `invalid_${snake(this.name)}`, this.name);
  }

  value() {
    const raw = this.fields.lookup(this.name);
    if (raw === undefined || raw === null) return null;
    if (typeof raw === 'object' && !(raw instanceof Written)) throw this.invalid('must be a single value, not a list or object');
    let text = (raw instanceof Written ? raw.text : String(raw)).trim();
    if (!text) return null;
    const r = this.rules;
    if (r.upper) text = text.toUpperCase();
    if (r.lower) text = text.toLowerCase();
    const chars = [...text].length;
    if (r.minLen !== undefined && chars < r.minLen) throw this.invalid(`must be at least ${r.minLen} characters`);
    if (r.maxLen !== undefined && chars > r.maxLen) throw this.invalid(`must be at most ${r.maxLen} characters`);
    if (r.pattern !== undefined) {
      let compiled = patterns.get(r.pattern);
      if (!compiled) {
        try {
          compiled = new RegExp(`^(?:${r.pattern})$`, 'u');
        } catch (e) {
          throw invalid(`the processor's pattern for ${this.name} is not a regular expression: ${e.message}`, 'invalid_pattern');
        }
        patterns.set(r.pattern, compiled);
      }
      if (!compiled.test(text)) throw this.invalid(`does not match the expected pattern ${r.pattern}`);
    }
    return text;
  }

  read(parse) {
    const text = this.value();
    if (text === null) {
      if (this.rules.optional) return null;
      throw this.missing();
    }
    return parse(text);
  }

  /** The value as text, trimmed. */
  text() {
    return this.read((t) => t);
  }

  /** An email address, lower-cased. */
  email() {
    return this.read((t) => {
      const email = t.toLowerCase();
      if (!isEmail(email)) throw this.invalid('is not a valid email address');
      return email;
    });
  }

  /** One of `choices` (after upper/lower). */
  oneOf(choices) {
    return this.read((t) => {
      if (!choices.includes(t)) throw this.invalid(`must be one of ${choices.join(', ')}`);
      return t;
    });
  }

  /** true/false, yes/no, y/n or 1/0, in any case. */
  boolean() {
    return this.read((t) => {
      const lowered = t.toLowerCase();
      if (['true', 'yes', 'y', '1'].includes(lowered)) return true;
      if (['false', 'no', 'n', '0'].includes(lowered)) return false;
      throw this.invalid('must be true or false');
    });
  }

  bounded(number) {
    for (const [bound, atLeast] of [
      [this.rules.min, true],
      [this.rules.max, false],
    ]) {
      if (bound === undefined) continue;
      const ordering = compareDecimals(number, String(bound));
      if (ordering === null) throw invalid(`the processor's bound ${JSON.stringify(bound)} for ${this.name} is not a number`, 'invalid_bound');
      if (atLeast && ordering < 0) throw this.invalid(`must be at least ${bound}`);
      if (!atLeast && ordering > 0) throw this.invalid(`must be at most ${bound}`);
    }
  }

  /** A whole number within min and max: a Number, or a BigInt beyond 2^53. */
  integer() {
    return this.read((t) => {
      if (!/^[+-]?[0-9]+$/.test(t)) throw this.invalid('must be a whole number');
      const n = BigInt(t.replace(/^\+/, ''));
      if (n < -(2n ** 63n) || n >= 2n ** 63n) throw this.invalid('must be a whole number');
      this.bounded(n.toString());
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    });
  }

  /** A decimal with at most `scale` places within min and max, as a string exactly as written (with a dot). */
  decimal(scale) {
    return this.read((t) => {
      const [sep, wrong] = this.rules.comma
        ? [',', 'must be a number with a decimal comma']
        : ['.', 'must be a number with a dot as decimal separator'];
      const match = new RegExp(`^([+-]?)([0-9]+)(?:\\${sep}([0-9]+))?$`).exec(t);
      if (!match) throw this.invalid(wrong);
      const [, sign, whole, fraction] = match;
      if (fraction !== undefined && fraction.length > scale) throw this.invalid(`must have at most ${scale} decimal places`);
      const number = `${sign === '-' ? '-' : ''}${whole}${fraction !== undefined ? `.${fraction}` : ''}`;
      this.bounded(number);
      return number;
    });
  }

  /** A day of the calendar, as a 'YYYY-MM-DD' string, read as ISO or in the `format`. */
  date() {
    return this.read((t) => {
      const form = this.rules.format ?? 'YYYY-MM-DD';
      const parts = this.rules.format ? strptime(this.rules.format, t) : isoDate(t);
      if (!parts || parts.Y === undefined || parts.m === undefined || parts.d === undefined) throw this.invalid(`must be a date as ${form}`);
      return this.day(parts);
    });
  }

  /** A date and time as ISO 8601 text 'YYYY-MM-DDTHH:MM:SS' (with the fraction and zone the value had). */
  timestamp() {
    return this.read((t) => {
      const form = this.rules.format ?? 'YYYY-MM-DDTHH:MM:SS';
      const wrong = () => this.invalid(`must be a timestamp as ${form}`);
      let parts;
      let rest = '';
      if (this.rules.format) {
        parts = strptime(this.rules.format, t);
      } else {
        const m = ISO_TIMESTAMP.exec(t);
        if (!m || (m[7] && m[6] === undefined)) throw wrong();
        parts = { Y: +m[1], m: +m[2], d: +m[3], H: +m[4], M: +m[5], S: +(m[6] ?? 0) };
        rest = (m[7] ?? '') + (m[8] === 'z' ? 'Z' : (m[8] ?? ''));
      }
      if (!parts || parts.Y === undefined || parts.m === undefined || parts.d === undefined) throw wrong();
      const [H, M, S] = [parts.H ?? 0, parts.M ?? 0, parts.S ?? 0];
      if (H > 23 || M > 59 || S > 59) throw wrong();
      const pad = (n) => String(n).padStart(2, '0');
      return `${this.day(parts)}T${pad(H)}:${pad(M)}:${pad(S)}${rest}`;
    });
  }

  day({ Y, m, d }) {
    const leap = (Y % 4 === 0 && Y % 100 !== 0) || Y % 400 === 0;
    const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1];
    if (days === undefined || d < 1 || d > days) throw this.invalid('is not a day of the calendar');
    return `${String(Y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
  }
}

const ISO_TIMESTAMP =
  /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?(\.[0-9]{1,9})?([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$/;

function isoDate(text) {
  const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})$/.exec(text);
  return m && { Y: +m[1], m: +m[2], d: +m[3] };
}

// Reads all of `text` in `spec` (%Y %m %d %H %M %S %% and literals); null if it does not fit.
function strptime(spec, text) {
  const parts = {};
  let at = 0;
  for (let i = 0; i < spec.length; i++) {
    if (spec[i] !== '%') {
      if (text[at] !== spec[i]) return null;
      at++;
      continue;
    }
    const directive = spec[++i];
    if (directive === '%') {
      if (text[at] !== '%') return null;
      at++;
      continue;
    }
    if (directive === undefined || !'YmdHMS'.includes(directive)) return null;
    const m = (directive === 'Y' ? /^[0-9]{4}/ : /^[0-9]{1,2}/).exec(text.slice(at));
    if (!m) return null;
    parts[directive] = +m[0];
    at += m[0].length;
  }
  return at === text.length ? parts : null;
}

// Compares two decimal numbers exactly (as text); null when either is not one.
function compareDecimals(a, b) {
  const parts = (s) => {
    const m = /^([+-]?)([0-9]+)(?:\.([0-9]*))?$/.exec(s.trim());
    if (!m) return null;
    const whole = m[2].replace(/^0+/, '');
    const fraction = (m[3] ?? '').replace(/0+$/, '');
    return { negative: m[1] === '-' && (whole !== '' || fraction !== ''), whole, fraction };
  };
  const [x, y] = [parts(a), parts(b)];
  if (!x || !y) return null;
  const cmp = (p, q) => (p < q ? -1 : p > q ? 1 : 0);
  const magnitude = cmp(x.whole.length, y.whole.length) || cmp(x.whole, y.whole) || cmp(x.fraction, y.fraction);
  if (x.negative !== y.negative) return x.negative ? -1 : 1;
  return x.negative ? -magnitude : magnitude;
}

function isEmail(s) {
  if (s.length > 254 || /\s/u.test(s)) return false;
  const at = s.split('@');
  if (at.length !== 2 || !at[0] || !at[1].includes('.')) return false;
  return at[1].split('.').every((label) => label && !label.startsWith('-') && !label.endsWith('-') && [...label].every((c) => c === '-' || isAlnum(c)));
}
