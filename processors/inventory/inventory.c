/* inventory: stock levels from a CSV of sku, warehouse, quantity. A SKU must be in the product
 * catalogue (products, imported by product_catalog); a level is upserted per SKU and warehouse. */
#include <ctype.h>
#include <stdlib.h>

#include "ingot.h"

static char *upper(const char *text) {
    char *copy = ingot_strdup(text);
    for (char *c = copy; *c; c++) *c = (char)toupper((unsigned char)*c);
    return copy;
}

ingot_status ingot_process_item(const ingot_item *item, ingot_outcome *out, ingot_error *err) {
    const char *sku = ingot_field(item, "sku"), *warehouse = ingot_field(item, "warehouse");
    const char *quantity = ingot_field(item, "quantity");
    if (!sku) return ingot_invalid(err, "missing_sku", "sku", "the row has no SKU");
    if (!warehouse) return ingot_invalid(err, "missing_warehouse", "warehouse", "the row has no warehouse");
    if (!quantity) return ingot_invalid(err, "missing_quantity", "quantity", "the row has no quantity");
    char *end;
    long long count = strtoll(quantity, &end, 10);
    if (*end || count < 0 || !isdigit((unsigned char)quantity[0]))
        return ingot_invalid(err, "invalid_quantity", "quantity", "quantity %s is not a whole number of at least 0", quantity);
    sku = upper(sku);
    warehouse = upper(warehouse);

    ingot_sql_error sql;
    const ingot_rows *known = ingot_query("SELECT 1 FROM products WHERE sku = $1", INGOT_PARAMS(ingot_text(sku)), &sql);
    if (!known) return ingot_sql_fail(err, &sql);
    if (ingot_rows_count(known) == 0) return ingot_invalid(err, "unknown_sku", "sku", "SKU %s is not in the catalogue", sku);
    if (!ingot_execute("INSERT INTO stock_levels (sku, warehouse, quantity) VALUES ($1, $2, $3) "
                       "ON CONFLICT (sku, warehouse) DO UPDATE SET quantity = EXCLUDED.quantity, updated_at = now()",
                       INGOT_PARAMS(ingot_text(sku), ingot_text(warehouse), ingot_int(count)), NULL, &sql))
        return ingot_sql_fail(err, &sql);

    ingot_object *level = ingot_object_new();
    ingot_object_str(level, "sku", sku);
    ingot_object_str(level, "warehouse", warehouse);
    ingot_object_int(level, "quantity", count);
    ingot_info("%s in %s: %lld", sku, warehouse, count);
    return ingot_done(out, "stock_levels", ingot_strdup(sku), ingot_object_end(level));
}
