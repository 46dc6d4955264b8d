"""customer_data's rules in Python, for `make bench` only: the same checks and the same upsert as
processors/customer_data (Rust), so the languages compare on equal work."""
import ingot


def is_email(s):
    user, at, host = s.partition("@")
    if not at or not user or "@" in host or any(c.isspace() for c in s):
        return False
    return any(c == "." and 0 < i < len(host) - 1 for i, c in enumerate(host))


class Processor(ingot.Processor):
    def process_item(self, item):
        row = ingot.data(item)
        email = str(row.get("email") or "").strip().lower()
        name = str(row.get("name") or "").strip()
        country = str(row.get("country") or "").strip().upper()
        if not is_email(email):
            raise ingot.invalid("email is not a valid address", "invalid_email", "email")
        if not name:
            raise ingot.invalid("name is required", "missing_name", "name")
        if country and not (len(country) == 2 and country.isascii() and country.isalpha()):
            raise ingot.invalid("country must be 2 letters", "invalid_country", "country")
        customer = ingot.query_scalar(
            "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE"
            " SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id",
            email, name, country or None,
        )
        return ingot.outcome("customers", customer, {"email": email, "name": name, "country": country or None})
