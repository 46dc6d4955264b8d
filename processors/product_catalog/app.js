// Imports products from a JSON array of {sku, title, price_cents, tags?}, upserting by SKU.
import { execute, log } from 'ingot:processor/context@0.1.0';

const SKU = /^[A-Z0-9-]{3,32}$/;
// JSON.parse reads 12.0 as 12; the item's JSON text still says which it was.
const INTEGER_PRICE = /"price_cents":\s*-?\d+\s*[,}]/;
const invalid = (message, code, field) => ({ tag: 'invalid', val: { message, code, field } });

function normalise(data) {
  const row = JSON.parse(data);
  const integer = Number.isInteger(row.price_cents) && INTEGER_PRICE.test(data);
  if (typeof row.sku !== 'string' || !SKU.test(row.sku)) throw invalid('sku must be 3-32 of A-Z, 0-9 and -', 'invalid_sku', 'sku');
  const title = typeof row.title === 'string' ? row.title.trim() : '';
  if (!title) throw invalid('title is required', 'missing_title', 'title');
  if (!integer || row.price_cents < 0) throw invalid('price_cents must be a whole number ≥ 0', 'invalid_price', 'price_cents');
  const tags = row.tags ?? [];
  if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw invalid('tags must be a list of strings', 'invalid_tags', 'tags');
  return { sku: row.sku, title, price_cents: row.price_cents, tags };
}

export const processor = {
  validateBatch() {},
  // processItem validates as it normalises; checking here too would parse every item twice.
  validateItem() {},
  processItem(item) {
    const p = normalise(item.data);
    execute(
      'INSERT INTO products (sku, title, price_cents, tags) VALUES ($1, $2, $3, $4) ' +
        'ON CONFLICT (sku) DO UPDATE SET title = EXCLUDED.title, price_cents = EXCLUDED.price_cents, tags = EXCLUDED.tags, updated_at = now()',
      [{ tag: 'text', val: p.sku }, { tag: 'text', val: p.title }, { tag: 'int', val: BigInt(p.price_cents) }, { tag: 'json', val: JSON.stringify(p.tags) }],
    );
    log('debug', `upserted ${p.sku}`, undefined);
    return { targetTable: 'products', targetId: p.sku, processedData: JSON.stringify(p) };
  },
  onBatchStart() {},
  onBatchComplete() {},
  onItemError() {},
};
