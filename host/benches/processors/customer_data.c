/* customer_data's rules in C, for `make bench` only: the same checks and the same upsert as
 * processors/customer_data (Rust), so the languages compare on equal work. */
#include <ctype.h>
#include <string.h>

#include "ingot.h"

static bool is_email(const char *s) {
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@')) return false;
    for (const char *c = s; *c; c++)
        if (isspace((unsigned char)*c)) return false;
    const char *host = at + 1;
    size_t len = strlen(host);
    for (size_t i = 1; i + 1 < len; i++)
        if (host[i] == '.') return true;
    return false;
}

static char *cased(const char *text, int (*change)(int)) {
    char *copy = ingot_strdup(text ? text : "");
    for (char *c = copy; *c; c++) *c = (char)change((unsigned char)*c);
    return copy;
}

ingot_status ingot_process_item(const ingot_item *item, ingot_outcome *out, ingot_error *err) {
    const char *email = cased(ingot_field(item, "email"), tolower);
    const char *name = ingot_field(item, "name");
    const char *country = cased(ingot_field(item, "country"), toupper);
    if (!is_email(email)) return ingot_invalid(err, "invalid_email", "email", "email is not a valid address");
    if (!name) return ingot_invalid(err, "missing_name", "name", "name is required");
    if (*country && !(strlen(country) == 2 && isupper((unsigned char)country[0]) && isupper((unsigned char)country[1])))
        return ingot_invalid(err, "invalid_country", "country", "country must be 2 letters");
    const char *country_or_null = *country ? country : NULL;
    ingot_sql_error sql;
    const ingot_rows *rows = ingot_query(
        "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE "
        "SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id",
        INGOT_PARAMS(ingot_text(email), ingot_text(name), ingot_text(country_or_null)), &sql);
    if (!rows) return ingot_sql_fail(err, &sql);
    const ingot_value *id = ingot_rows_get(rows, 0, "id");
    ingot_object *data = ingot_object_new();
    ingot_object_str(data, "email", email);
    ingot_object_str(data, "name", name);
    ingot_object_str(data, "country", country_or_null);
    return ingot_done(out, "customers", id ? id->text : NULL, ingot_object_end(data));
}
