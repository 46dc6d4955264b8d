/* The hostile suite's probe, in C: each item names an attack in "mode", and does to the host what
 * the Rust probe's mode of the same name does (log, invalid, loop, alloc, sql, sql_sequence). */
#include <stdlib.h>
#include <string.h>

#include "ingot.h"

static volatile unsigned long long sink;

ingot_status ingot_process_item(const ingot_item *item, ingot_outcome *out, ingot_error *err) {
    const char *mode = ingot_json_text(ingot_json_get(item->json, "mode"));
    const char *message = ingot_json_text(ingot_json_get(item->json, "message"));
    if (!mode) return ingot_invalid(err, "no_mode", "mode", "the item names no mode");
    if (strcmp(mode, "log") == 0) {
        ingot_info("line 0: %s", message ? message : "");
        return ingot_done(out, NULL, NULL, "{\"logged\":true}");
    }
    if (strcmp(mode, "invalid") == 0) return ingot_invalid(err, NULL, NULL, "%s", message ? message : "invalid");
    if (strcmp(mode, "loop") == 0)
        for (;;) sink++;
    if (strcmp(mode, "alloc") == 0)
        for (;;) {
            char *hoard = malloc(1 << 20);
            if (!hoard) abort();
            memset(hoard, 1, 1 << 20);
            sink += (unsigned char)hoard[sink % (1 << 20)];
        }
    if (strcmp(mode, "sql") == 0) {
        const char *sql = ingot_json_text(ingot_json_get(item->json, "sql"));
        bool query = ingot_json_kind(ingot_json_get(item->json, "query")) == INGOT_JSON_BOOL &&
                     strcmp(ingot_json_text(ingot_json_get(item->json, "query")), "true") == 0;
        ingot_sql_error e;
        if (query) {
            const ingot_rows *rows = ingot_query(sql ? sql : "", INGOT_NO_PARAMS, &e);
            return rows ? ingot_done(out, NULL, NULL, ingot_rows_json(rows)) : ingot_sql_fail(err, &e);
        }
        uint64_t affected = 0;
        if (!ingot_execute(sql ? sql : "", INGOT_NO_PARAMS, &affected, &e)) return ingot_sql_fail(err, &e);
        ingot_object *result = ingot_object_new();
        ingot_object_int(result, "affected", (int64_t)affected);
        return ingot_done(out, NULL, NULL, ingot_object_end(result));
    }
    if (strcmp(mode, "sql_sequence") == 0) {
        const ingot_json *statements = ingot_json_get(item->json, "statements");
        const char *last = "[]";
        for (size_t i = 0; i < ingot_json_len(statements); i++) {
            const char *statement = ingot_json_text(ingot_json_at(statements, i));
            ingot_sql_error e;
            const ingot_rows *rows = ingot_query(statement ? statement : "", INGOT_NO_PARAMS, &e);
            if (!rows) return ingot_sql_fail(err, &e);
            last = ingot_rows_json(rows);
        }
        return ingot_done(out, NULL, NULL, last);
    }
    return ingot_invalid(err, "unknown_mode", "mode", "unknown mode %s", mode);
}
