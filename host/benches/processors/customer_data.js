// customer_data's rules in JavaScript, for `make bench` only: the same checks and the same upsert
// as processors/customer_data (Rust), so the languages compare on equal work.
import { query } from 'ingot:processor/context@0.1.0';

const invalid = (message, code, field) => ({ tag: 'invalid', val: { message, code, field } });

function isEmail(s) {
  const at = s.indexOf('@');
  if (at <= 0 || s.indexOf('@', at + 1) !== -1 || /\s/.test(s)) return false;
  const host = s.slice(at + 1);
  for (let i = 1; i < host.length - 1; i++) if (host[i] === '.') return true;
  return false;
}

const text = (row, key) => (typeof row[key] === 'string' ? row[key] : row[key] == null ? '' : String(row[key])).trim();

export const processor = {
  validateBatch() {},
  validateItem() {},
  processItem(item) {
    const row = JSON.parse(item.data);
    const email = text(row, 'email').toLowerCase();
    const name = text(row, 'name');
    const country = text(row, 'country').toUpperCase();
    if (!isEmail(email)) throw invalid('email is not a valid address', 'invalid_email', 'email');
    if (!name) throw invalid('name is required', 'missing_name', 'name');
    if (country && !/^[A-Z]{2}$/.test(country)) throw invalid('country must be 2 letters', 'invalid_country', 'country');
    const rows = query(
      'INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE ' +
        'SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id',
      [{ tag: 'text', val: email }, { tag: 'text', val: name }, country ? { tag: 'text', val: country } : { tag: 'null' }],
    );
    const id = rows.rows[0][0].val;
    return {
      targetTable: 'customers',
      targetId: id,
      processedData: JSON.stringify({ email, name, country: country || null }),
    };
  },
  onBatchStart() {},
  onBatchComplete() {},
  onItemError() {},
};
