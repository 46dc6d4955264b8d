"""{{name}}: an Ingot processor. It checks each item with the validation kit and keeps the
normalised record; replace the rules and add your database write (ingot.upsert, ingot.query)."""
import ingot


def record(item):
    """The record an item holds; raises the first rule it breaks (code missing_<field> or
    invalid_<field>, with the field's name)."""
    row = ingot.fields(item)
    return {"name": row.get("name").max_len(200).text(), "email": row.get("email").email()}


class Processor(ingot.Processor):
    def process_item(self, item):
        rec = record(item)
        ingot.info(f"item {item.index} is {rec['email']}")
        return ingot.outcome(None, None, rec)
