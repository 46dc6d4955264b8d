"""{{name}}: an Ingot processor. It logs each item and returns it unchanged; replace
process_item with your logic (see ingot.py for the helpers)."""
import ingot


class Processor(ingot.Processor):
    def process_item(self, item):
        row = ingot.data(item)
        ingot.info(f"item {item.index} has {len(row)} fields")
        return ingot.outcome(None, None, row)
