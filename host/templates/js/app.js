// {{name}}: an Ingot processor. It checks each item with the validation kit and keeps the
// normalised record; replace the rules and add your database write (ingot.upsert, ingot.query).
import * as ingot from './ingot.js';

// The record an item holds; throws the first rule it breaks (code missing_<field> or
// invalid_<field>, with the field's name).
export function record(item) {
  const row = ingot.fields(item);
  return { name: row.get('name').maxLen(200).text(), email: row.get('email').email() };
}

export const processor = ingot.processor({
  processItem(item) {
    const rec = record(item);
    ingot.info(`item ${item.index} is ${rec.email}`);
    return ingot.outcome(undefined, undefined, rec);
  },
});
