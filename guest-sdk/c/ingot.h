/* ingot.h: write an Ingot processor in C (or Zig, through @cImport).
 *
 * Implement one function and build with `zig cc --target=wasm32-wasi -mexec-model=reactor`,
 * linking ingot.c and the bindings `ingot bindings --lang c` writes; `ingot componentize` makes
 * the component:
 *
 *     #include "ingot.h"
 *     ingot_status ingot_process_item(const ingot_item *item, ingot_outcome *out, ingot_error *err) {
 *         const char *sku = ingot_field(item, "sku");
 *         if (!sku) return ingot_invalid(err, "missing_sku", "sku", "the item has no sku");
 *         return ingot_done(out, "stock", sku, NULL);
 *     }
 *
 * Everything the helper hands out (strings, rows, JSON values) lives until the host's call
 * returns and is freed then: never free it, and copy what must outlive the item.
 */
#ifndef INGOT_H
#define INGOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- What the processor implements ---------------------------------------------------------- */

/* How an item ended. */
typedef enum ingot_status {
    INGOT_OK = 0,
    /* The data is bad; retrying cannot help. The item ends `failed`. */
    INGOT_INVALID = 1,
    /* A transient problem; the host may try again. */
    INGOT_RETRYABLE = 2,
    /* Deliberately not imported (e.g. a duplicate). The item ends `skipped`. */
    INGOT_SKIP = 3,
} ingot_status;

typedef struct ingot_json ingot_json;

/* One source item: a CSV row, JSON array element or NDJSON line. */
typedef struct ingot_item {
    const char *id;       /* a UUID, stable for the item's life in its batch */
    uint64_t index;       /* position in the source file, from 0 */
    const char *data;     /* the source data as JSON text (a CSV row: an object keyed by header) */
    uint32_t attempt;     /* from 1 */
    const ingot_json *json; /* `data`, parsed */
} ingot_item;

/* The batch, as the batch hooks see it. */
typedef struct ingot_batch {
    const char *id;
    const char *batch_type;
    uint64_t item_count, completed, failed, skipped;
    const char *metadata; /* a JSON object */
    const char *source;   /* a JSON object: file name, format, bytes, sha256 */
    uint32_t retry_count;
    const char *parent_id; /* NULL for an original batch */
    bool dry_run;
} ingot_batch;

/* What processing an item produced (set it with ingot_done). */
typedef struct ingot_outcome {
    const char *target_table, *target_id, *processed_data;
} ingot_outcome;

/* Why an item was not imported (set it with ingot_invalid, ingot_retryable, ingot_skip). */
typedef struct ingot_error {
    ingot_status kind;
    const char *message, *code, *field;
} ingot_error;

/* Required: imports one item. Its database writes commit with the item, or not at all. */
ingot_status ingot_process_item(const ingot_item *item, ingot_outcome *out, ingot_error *err);

/* Optional (the helper's defaults accept everything and do nothing): define any of these to
 * override them. The batch hooks return NULL to go on, or a message that fails the batch. */
ingot_status ingot_validate_item(const ingot_item *item, ingot_error *err);
const char *ingot_validate_batch(const ingot_batch *batch);
const char *ingot_on_batch_start(const ingot_batch *batch);
const char *ingot_on_batch_complete(const ingot_batch *batch, bool success);
void ingot_on_item_error(const ingot_item *item, const ingot_error *error);

/* ---- Results ------------------------------------------------------------------------------- */

/* Sets the outcome (any argument may be NULL; processed_data is JSON text) and returns INGOT_OK. */
ingot_status ingot_done(ingot_outcome *out, const char *target_table, const char *target_id,
                        const char *processed_data);

/* Sets the item's error (code and field may be NULL; the message is printf-formatted) and
 * returns `kind`, so that `return ingot_fail(...)` ends the item. */
ingot_status ingot_fail(ingot_error *err, ingot_status kind, const char *code, const char *field,
                        const char *format, ...) __attribute__((format(printf, 5, 6)));
#define ingot_invalid(err, code, field, ...) ingot_fail((err), INGOT_INVALID, (code), (field), __VA_ARGS__)
#define ingot_retryable(err, code, field, ...) ingot_fail((err), INGOT_RETRYABLE, (code), (field), __VA_ARGS__)
#define ingot_skip(err, code, field, ...) ingot_fail((err), INGOT_SKIP, (code), (field), __VA_ARGS__)

/* ---- The item's data (JSON) ---------------------------------------------------------------- */

/* A field of the item as text, surrounding whitespace trimmed: a string's value, or a number's
 * or boolean's literal text. NULL when the field is missing, null or blank. */
const char *ingot_field(const ingot_item *item, const char *name);

typedef enum ingot_json_type {
    INGOT_JSON_NULL, INGOT_JSON_BOOL, INGOT_JSON_NUMBER, INGOT_JSON_STRING, INGOT_JSON_ARRAY,
    INGOT_JSON_OBJECT,
} ingot_json_type;

/* Parses JSON text; NULL when it is not valid JSON. */
const ingot_json *ingot_json_parse(const char *text);
ingot_json_type ingot_json_kind(const ingot_json *value);
/* An object's member, or NULL (also when `value` is NULL or no object). */
const ingot_json *ingot_json_get(const ingot_json *value, const char *key);
/* An array's length and elements (0 and NULL for anything else). */
size_t ingot_json_len(const ingot_json *value);
const ingot_json *ingot_json_at(const ingot_json *value, size_t index);
/* A string's decoded value, a number's exact literal text, "true"/"false"; NULL otherwise. */
const char *ingot_json_text(const ingot_json *value);

/* Builds a JSON object: ingot_object_new(), then the setters, then ingot_object_end() for its
 * text. Strings are escaped; a NULL string writes null. */
typedef struct ingot_object ingot_object;
ingot_object *ingot_object_new(void);
void ingot_object_str(ingot_object *object, const char *key, const char *value);
void ingot_object_int(ingot_object *object, const char *key, int64_t value);
void ingot_object_bool(ingot_object *object, const char *key, bool value);
/* `json` is JSON text written as it is (a number's exact text, a nested object, …). */
void ingot_object_raw(ingot_object *object, const char *key, const char *json);
const char *ingot_object_end(ingot_object *object);

/* ---- The database -------------------------------------------------------------------------- */

/* A typed SQL parameter or column value. */
typedef enum ingot_value_kind {
    INGOT_VALUE_NULL, INGOT_VALUE_BOOL, INGOT_VALUE_INT, INGOT_VALUE_FLOAT, INGOT_VALUE_TEXT,
    INGOT_VALUE_JSON, INGOT_VALUE_UUID, INGOT_VALUE_TIMESTAMP, INGOT_VALUE_BYTES,
} ingot_value_kind;

typedef struct ingot_value {
    ingot_value_kind kind;
    bool boolean;
    int64_t integer;
    double number;
    const char *text; /* text, json, uuid, timestamp (NUL-terminated) */
    const uint8_t *bytes;
    size_t len; /* of bytes */
} ingot_value;

ingot_value ingot_null(void);
ingot_value ingot_bool(bool value);
ingot_value ingot_int(int64_t value);
ingot_value ingot_float(double value);
ingot_value ingot_text(const char *value); /* NULL binds NULL */
ingot_value ingot_json_value(const char *json);
ingot_value ingot_uuid(const char *value);
ingot_value ingot_timestamp(const char *rfc3339);
ingot_value ingot_bytes(const uint8_t *bytes, size_t len);

/* Parameters in place: ingot_execute(sql, INGOT_PARAMS(ingot_text(sku), ingot_int(n)), ...). */
#define INGOT_PARAMS(...) \
    ((const ingot_value[]){__VA_ARGS__}), (sizeof((const ingot_value[]){__VA_ARGS__}) / sizeof(ingot_value))
#define INGOT_NO_PARAMS NULL, 0

/* Why a database call failed. */
typedef enum ingot_sql_error_kind {
    INGOT_SQL_DENIED, INGOT_SQL_INVALID, INGOT_SQL_DATABASE, INGOT_SQL_LIMIT, INGOT_SQL_ABORTED,
} ingot_sql_error_kind;

typedef struct ingot_sql_error {
    ingot_sql_error_kind kind;
    const char *message;
    const char *sqlstate; /* PostgreSQL's SQLSTATE, or NULL */
} ingot_sql_error;

/* Runs one data statement in the item's transaction; false (and *err set) when it failed, which
 * aborts the item's transaction. `affected` may be NULL. */
bool ingot_execute(const char *sql, const ingot_value *params, size_t count, uint64_t *affected,
                   ingot_sql_error *err);

typedef struct ingot_rows ingot_rows;
/* Runs one query in the item's transaction; NULL (and *err set) when it failed. */
const ingot_rows *ingot_query(const char *sql, const ingot_value *params, size_t count, ingot_sql_error *err);
size_t ingot_rows_count(const ingot_rows *rows);
/* The value of column `column` in row `row`; NULL when there is no such row or column. */
const ingot_value *ingot_rows_get(const ingot_rows *rows, size_t row, const char *column);
/* The rows as a JSON array of objects keyed by column. */
const char *ingot_rows_json(const ingot_rows *rows);

/* Fails the item for a database error: retryable for serialization failures and deadlocks
 * (SQLSTATE class 40), invalid otherwise; code `sql_error`. */
ingot_status ingot_sql_fail(ingot_error *err, const ingot_sql_error *sql_error);

/* ---- Logs and metadata --------------------------------------------------------------------- */

typedef enum ingot_level { INGOT_DEBUG, INGOT_INFO, INGOT_WARNING, INGOT_ERROR } ingot_level;

/* Records a log line for the current item (kept even when the item fails); printf-formatted. */
void ingot_log(ingot_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));
#define ingot_debug(...) ingot_log(INGOT_DEBUG, __VA_ARGS__)
#define ingot_info(...) ingot_log(INGOT_INFO, __VA_ARGS__)
#define ingot_warn(...) ingot_log(INGOT_WARNING, __VA_ARGS__)
#define ingot_error_log(...) ingot_log(INGOT_ERROR, __VA_ARGS__)

/* One key of the batch metadata as JSON text, or NULL. */
const char *ingot_get_metadata(const char *key);
/* Sets one key to JSON text; NULL when done, else the host's reason. */
const char *ingot_set_metadata(const char *key, const char *json);

/* Memory that lives until the host's call returns (zeroed); NULL only when memory is exhausted. */
void *ingot_alloc(size_t size);
/* A copy of `text` in that memory. */
char *ingot_strdup(const char *text);

#ifdef __cplusplus
}
#endif

#endif
