/* ingot.c: the C helper's implementation (see ingot.h). It implements the contract's exports
 * over the bindings `ingot bindings --lang c` writes, owns all memory of one host call in an
 * arena, and parses the item's JSON with a small recursive-descent parser (depth-limited, so a
 * hostile item cannot exhaust the stack). */
#include "ingot.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "import_processor.h"

/* ---- The arena: every allocation of one host call, freed when the call returns ------------- */

/* The header is max_align_t-sized so that what follows it is aligned for any type: the host checks
 * the alignment of every list it is handed (SQL parameters hold 64-bit values). */
typedef union block {
    union block *next;
    max_align_t align;
} block;
static block *arena;

void *ingot_alloc(size_t size) {
    block *b = calloc(1, sizeof(block) + size + 1);
    if (!b) abort(); /* out of memory: the host reports the memory limit */
    b->next = arena;
    arena = b;
    return b + 1;
}

static void arena_free(void) {
    while (arena) {
        block *next = arena->next;
        free(arena);
        arena = next;
    }
}

static char *dup_n(const char *text, size_t len) {
    char *copy = ingot_alloc(len);
    memcpy(copy, text, len);
    return copy;
}

char *ingot_strdup(const char *text) { return text ? dup_n(text, strlen(text)) : NULL; }

static char *from_wit(const import_processor_string_t *s) { return dup_n((const char *)s->ptr, s->len); }

static char *vformat(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(NULL, 0, format, args);
    char *text = ingot_alloc(len > 0 ? (size_t)len : 0);
    if (len > 0) vsnprintf(text, (size_t)len + 1, format, again);
    va_end(again);
    return text;
}

/* Strings returned to the host are freed by the bindings with free(): heap copies, never the arena. */
static void to_wit(import_processor_string_t *out, const char *text) { import_processor_string_dup(out, text); }

static void option_to_wit(import_processor_option_string_t *out, const char *text) {
    out->is_some = text != NULL;
    if (text) to_wit(&out->val, text);
}

/* ---- JSON ---------------------------------------------------------------------------------- */

struct ingot_json {
    ingot_json_type type;
    const char *text; /* string value, number literal, "true"/"false" */
    size_t len;       /* array elements or object members */
    const char **keys;
    const ingot_json **values;
};

typedef struct parser { const char *p; int depth; } parser;

static void skip_ws(parser *ps) {
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r') ps->p++;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static size_t utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

static const char *parse_string(parser *ps) {
    const char *start = ++ps->p, *end = start;
    while (*end && *end != '"') end += (*end == '\\' && end[1]) ? 2 : 1;
    if (*end != '"') return NULL;
    char *out = ingot_alloc((size_t)(end - start)), *o = out;
    for (const char *p = start; p < end; p++) {
        if (*p != '\\') { *o++ = *p; continue; }
        switch (*++p) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            if (end - p < 5) return NULL;
            int cp = hex4(p + 1);
            if (cp < 0) return NULL;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 7 && p[1] == '\\' && p[2] == 'u') {
                int low = hex4(p + 3);
                if (low >= 0xDC00 && low < 0xE000) { cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00); p += 6; }
            }
            o += utf8(o, (unsigned)cp);
            break;
        }
        default: *o++ = *p; /* \" \\ \/ */
        }
    }
    *o = 0;
    ps->p = end + 1;
    return out;
}

static const ingot_json *parse_value(parser *ps);

static const ingot_json *parse_container(parser *ps, bool object) {
    if (++ps->depth > 64) return NULL;
    ingot_json *v = ingot_alloc(sizeof *v);
    v->type = object ? INGOT_JSON_OBJECT : INGOT_JSON_ARRAY;
    size_t cap = 0;
    ps->p++;
    skip_ws(ps);
    char close = object ? '}' : ']';
    if (*ps->p == close) { ps->p++; ps->depth--; return v; }
    for (;;) {
        const char *key = NULL;
        if (object) {
            skip_ws(ps);
            if (*ps->p != '"' || !(key = parse_string(ps))) return NULL;
            skip_ws(ps);
            if (*ps->p++ != ':') return NULL;
        }
        const ingot_json *member = parse_value(ps);
        if (!member) return NULL;
        if (v->len == cap) {
            cap = cap ? cap * 2 : 8;
            const char **keys = ingot_alloc(cap * sizeof *keys);
            const ingot_json **values = ingot_alloc(cap * sizeof *values);
            if (v->len) { memcpy(keys, v->keys, v->len * sizeof *keys); memcpy(values, v->values, v->len * sizeof *values); }
            v->keys = keys;
            v->values = values;
        }
        v->keys[v->len] = key;
        v->values[v->len++] = member;
        skip_ws(ps);
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p++ != close) return NULL;
        ps->depth--;
        return v;
    }
}

static const ingot_json *parse_value(parser *ps) {
    skip_ws(ps);
    ingot_json *v;
    const char *p = ps->p;
    switch (*p) {
    case '{': return parse_container(ps, true);
    case '[': return parse_container(ps, false);
    case '"':
        v = ingot_alloc(sizeof *v);
        v->type = INGOT_JSON_STRING;
        return (v->text = parse_string(ps)) ? v : NULL;
    case 't': case 'f': case 'n': {
        const char *word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
        size_t n = strlen(word);
        if (strncmp(p, word, n) != 0) return NULL;
        ps->p += n;
        v = ingot_alloc(sizeof *v);
        v->type = *p == 'n' ? INGOT_JSON_NULL : INGOT_JSON_BOOL;
        v->text = *p == 'n' ? NULL : word;
        return v;
    }
    default: {
        const char *end = p;
        if (*end == '-') end++;
        if (*end < '0' || *end > '9') return NULL;
        while ((*end >= '0' && *end <= '9') || *end == '.' || *end == 'e' || *end == 'E' || *end == '+' || *end == '-') end++;
        v = ingot_alloc(sizeof *v);
        v->type = INGOT_JSON_NUMBER;
        v->text = dup_n(p, (size_t)(end - p)); /* exact text: no rounding through double */
        ps->p = end;
        return v;
    }
    }
}

const ingot_json *ingot_json_parse(const char *text) {
    if (!text) return NULL;
    parser ps = {text, 0};
    const ingot_json *v = parse_value(&ps);
    skip_ws(&ps);
    return v && *ps.p == 0 ? v : NULL;
}

ingot_json_type ingot_json_kind(const ingot_json *v) { return v ? v->type : INGOT_JSON_NULL; }

const ingot_json *ingot_json_get(const ingot_json *v, const char *key) {
    if (!v || v->type != INGOT_JSON_OBJECT) return NULL;
    const ingot_json *found = NULL;
    for (size_t i = 0; i < v->len; i++)
        if (strcmp(v->keys[i], key) == 0) found = v->values[i]; /* a repeated key: the last wins, as in PostgreSQL's jsonb */
    return found;
}

size_t ingot_json_len(const ingot_json *v) { return v && v->type == INGOT_JSON_ARRAY ? v->len : 0; }

const ingot_json *ingot_json_at(const ingot_json *v, size_t i) {
    return v && v->type == INGOT_JSON_ARRAY && i < v->len ? v->values[i] : NULL;
}

const char *ingot_json_text(const ingot_json *v) { return v ? v->text : NULL; }

const char *ingot_field(const ingot_item *item, const char *name) {
    const char *text = ingot_json_text(ingot_json_get(item->json, name));
    if (!text) return NULL;
    while (*text == ' ' || *text == '\t' || *text == '\r' || *text == '\n') text++;
    size_t len = strlen(text);
    while (len && (text[len - 1] == ' ' || text[len - 1] == '\t' || text[len - 1] == '\r' || text[len - 1] == '\n')) len--;
    return len ? dup_n(text, len) : NULL;
}

/* ---- Writing JSON -------------------------------------------------------------------------- */

struct ingot_object { char *text; size_t len, cap; };

static void put(ingot_object *o, const char *s, size_t n) {
    if (o->len + n + 2 > o->cap) {
        size_t cap = (o->cap + n + 2) * 2;
        char *text = ingot_alloc(cap);
        memcpy(text, o->text, o->len);
        o->text = text;
        o->cap = cap;
    }
    memcpy(o->text + o->len, s, n);
    o->len += n;
}

static void put_string(ingot_object *o, const char *s) {
    put(o, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; put(o, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); put(o, esc, 6); }
        else put(o, (const char *)&c, 1);
    }
    put(o, "\"", 1);
}

static void put_key(ingot_object *o, const char *key) {
    put(o, o->len > 1 ? "," : "", o->len > 1);
    put_string(o, key);
    put(o, ":", 1);
}

ingot_object *ingot_object_new(void) {
    ingot_object *o = ingot_alloc(sizeof *o);
    put(o, "{", 1);
    return o;
}

void ingot_object_raw(ingot_object *o, const char *key, const char *json) {
    put_key(o, key);
    json = json ? json : "null";
    put(o, json, strlen(json));
}

void ingot_object_str(ingot_object *o, const char *key, const char *value) {
    if (!value) { ingot_object_raw(o, key, NULL); return; }
    put_key(o, key);
    put_string(o, value);
}

void ingot_object_int(ingot_object *o, const char *key, int64_t value) {
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)value);
    ingot_object_raw(o, key, text);
}

void ingot_object_bool(ingot_object *o, const char *key, bool value) { ingot_object_raw(o, key, value ? "true" : "false"); }

const char *ingot_object_end(ingot_object *o) {
    put(o, "}", 1);
    o->text[o->len] = 0;
    return o->text;
}

/* ---- Results ------------------------------------------------------------------------------- */

ingot_status ingot_done(ingot_outcome *out, const char *table, const char *id, const char *data) {
    out->target_table = table;
    out->target_id = id;
    out->processed_data = data;
    return INGOT_OK;
}

ingot_status ingot_fail(ingot_error *err, ingot_status kind, const char *code, const char *field, const char *format, ...) {
    va_list args;
    va_start(args, format);
    err->message = vformat(format, args);
    va_end(args);
    err->kind = kind == INGOT_OK ? INGOT_INVALID : kind;
    err->code = code;
    err->field = field;
    return err->kind;
}

/* ---- The database -------------------------------------------------------------------------- */

ingot_value ingot_null(void) { return (ingot_value){.kind = INGOT_VALUE_NULL}; }
ingot_value ingot_bool(bool v) { return (ingot_value){.kind = INGOT_VALUE_BOOL, .boolean = v}; }
ingot_value ingot_int(int64_t v) { return (ingot_value){.kind = INGOT_VALUE_INT, .integer = v}; }
ingot_value ingot_float(double v) { return (ingot_value){.kind = INGOT_VALUE_FLOAT, .number = v}; }
static ingot_value textual(ingot_value_kind kind, const char *v) {
    return v ? (ingot_value){.kind = kind, .text = v} : ingot_null();
}
ingot_value ingot_text(const char *v) { return textual(INGOT_VALUE_TEXT, v); }
ingot_value ingot_json_value(const char *v) { return textual(INGOT_VALUE_JSON, v); }
ingot_value ingot_uuid(const char *v) { return textual(INGOT_VALUE_UUID, v); }
ingot_value ingot_timestamp(const char *v) { return textual(INGOT_VALUE_TIMESTAMP, v); }
ingot_value ingot_bytes(const uint8_t *bytes, size_t len) {
    return (ingot_value){.kind = INGOT_VALUE_BYTES, .bytes = bytes, .len = len};
}

/* Parameters are borrowed by the import: they point into the caller's memory. */
static ingot_processor_context_list_sql_value_t params_to_wit(const ingot_value *params, size_t count) {
    ingot_processor_context_sql_value_t *list = ingot_alloc(count * sizeof *list);
    for (size_t i = 0; i < count; i++) {
        const ingot_value *v = &params[i];
        ingot_processor_context_sql_value_t *w = &list[i];
        w->tag = (uint8_t)v->kind; /* the two enumerations share their order */
        switch (v->kind) {
        case INGOT_VALUE_NULL: break;
        case INGOT_VALUE_BOOL: w->val.boolean = v->boolean; break;
        case INGOT_VALUE_INT: w->val.int_ = v->integer; break;
        case INGOT_VALUE_FLOAT: w->val.float_ = v->number; break;
        case INGOT_VALUE_BYTES: w->val.bytes = (import_processor_list_u8_t){(uint8_t *)v->bytes, v->len}; break;
        default: import_processor_string_set(&w->val.text, v->text); break;
        }
    }
    return (ingot_processor_context_list_sql_value_t){list, count};
}

static void sql_error_from_wit(ingot_sql_error *err, ingot_processor_context_sql_error_t *w) {
    if (err) {
        err->kind = (ingot_sql_error_kind)w->kind;
        err->message = from_wit(&w->message);
        err->sqlstate = w->sqlstate.is_some ? from_wit(&w->sqlstate.val) : NULL;
    }
    ingot_processor_context_sql_error_free(w);
}

bool ingot_execute(const char *sql, const ingot_value *params, size_t count, uint64_t *affected, ingot_sql_error *err) {
    import_processor_string_t text;
    import_processor_string_set(&text, sql);
    ingot_processor_context_list_sql_value_t list = params_to_wit(params, count);
    uint64_t rows = 0;
    ingot_processor_context_sql_error_t w;
    if (!ingot_processor_context_execute(&text, &list, &rows, &w)) {
        sql_error_from_wit(err, &w);
        return false;
    }
    if (affected) *affected = rows;
    return true;
}

struct ingot_rows {
    size_t columns, count;
    const char **names;
    ingot_value *values; /* count * columns */
};

const ingot_rows *ingot_query(const char *sql, const ingot_value *params, size_t count, ingot_sql_error *err) {
    import_processor_string_t text;
    import_processor_string_set(&text, sql);
    ingot_processor_context_list_sql_value_t list = params_to_wit(params, count);
    ingot_processor_context_rows_t w;
    ingot_processor_context_sql_error_t e;
    if (!ingot_processor_context_query(&text, &list, &w, &e)) {
        sql_error_from_wit(err, &e);
        return NULL;
    }
    ingot_rows *rows = ingot_alloc(sizeof *rows);
    rows->columns = w.columns.len;
    rows->count = w.rows.len;
    rows->names = ingot_alloc(rows->columns * sizeof *rows->names);
    for (size_t c = 0; c < rows->columns; c++) rows->names[c] = from_wit(&w.columns.ptr[c]);
    rows->values = ingot_alloc(rows->count * rows->columns * sizeof *rows->values);
    for (size_t r = 0; r < rows->count; r++) {
        ingot_processor_types_list_sql_value_t row = w.rows.ptr[r];
        for (size_t c = 0; c < rows->columns && c < row.len; c++) {
            ingot_processor_types_sql_value_t *s = &row.ptr[c];
            ingot_value *v = &rows->values[r * rows->columns + c];
            v->kind = (ingot_value_kind)s->tag;
            switch (s->tag) {
            case INGOT_PROCESSOR_TYPES_SQL_VALUE_NULL: break;
            case INGOT_PROCESSOR_TYPES_SQL_VALUE_BOOLEAN: v->boolean = s->val.boolean; break;
            case INGOT_PROCESSOR_TYPES_SQL_VALUE_INT: v->integer = s->val.int_; break;
            case INGOT_PROCESSOR_TYPES_SQL_VALUE_FLOAT: v->number = s->val.float_; break;
            case INGOT_PROCESSOR_TYPES_SQL_VALUE_BYTES:
                v->bytes = (const uint8_t *)dup_n((const char *)s->val.bytes.ptr, s->val.bytes.len);
                v->len = s->val.bytes.len;
                break;
            default: v->text = from_wit(&s->val.text); break;
            }
        }
    }
    ingot_processor_context_rows_free(&w);
    return rows;
}

size_t ingot_rows_count(const ingot_rows *rows) { return rows ? rows->count : 0; }

const ingot_value *ingot_rows_get(const ingot_rows *rows, size_t row, const char *column) {
    if (!rows || row >= rows->count) return NULL;
    for (size_t c = 0; c < rows->columns; c++)
        if (strcmp(rows->names[c], column) == 0) return &rows->values[row * rows->columns + c];
    return NULL;
}

const char *ingot_rows_json(const ingot_rows *rows) {
    ingot_object *o = ingot_alloc(sizeof *o);
    put(o, "[", 1);
    for (size_t r = 0; r < ingot_rows_count(rows); r++) {
        ingot_object *row = ingot_object_new();
        for (size_t c = 0; c < rows->columns; c++) {
            const ingot_value *v = &rows->values[r * rows->columns + c];
            const char *key = rows->names[c];
            char number[40];
            switch (v->kind) {
            case INGOT_VALUE_NULL: case INGOT_VALUE_BYTES: ingot_object_raw(row, key, NULL); break;
            case INGOT_VALUE_BOOL: ingot_object_bool(row, key, v->boolean); break;
            case INGOT_VALUE_INT: ingot_object_int(row, key, v->integer); break;
            case INGOT_VALUE_FLOAT: snprintf(number, sizeof number, "%.17g", v->number); ingot_object_raw(row, key, number); break;
            case INGOT_VALUE_JSON: ingot_object_raw(row, key, v->text); break;
            default: ingot_object_str(row, key, v->text); break;
            }
        }
        const char *text = ingot_object_end(row);
        if (r) put(o, ",", 1);
        put(o, text, strlen(text));
    }
    put(o, "]", 1);
    o->text[o->len] = 0;
    return o->text;
}

ingot_status ingot_sql_fail(ingot_error *err, const ingot_sql_error *e) {
    bool transient = e->sqlstate && strncmp(e->sqlstate, "40", 2) == 0;
    return ingot_fail(err, transient ? INGOT_RETRYABLE : INGOT_INVALID, "sql_error", NULL, "%s", e->message);
}

/* ---- Logs and metadata --------------------------------------------------------------------- */

void ingot_log(ingot_level level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    const char *message = vformat(format, args);
    va_end(args);
    import_processor_string_t text;
    import_processor_string_set(&text, message);
    ingot_processor_context_log((ingot_processor_context_log_level_t)level, &text, NULL);
}

const char *ingot_get_metadata(const char *key) {
    import_processor_string_t k, value;
    import_processor_string_set(&k, key);
    if (!ingot_processor_context_get_metadata(&k, &value)) return NULL;
    char *copy = from_wit(&value);
    import_processor_string_free(&value);
    return copy;
}

const char *ingot_set_metadata(const char *key, const char *json) {
    import_processor_string_t k, v, err;
    import_processor_string_set(&k, key);
    import_processor_string_set(&v, json);
    if (ingot_processor_context_set_metadata(&k, &v, &err)) return NULL;
    char *copy = from_wit(&err);
    import_processor_string_free(&err);
    return copy;
}

/* ---- The exports: the contract over the functions above ------------------------------------ */

__attribute__((weak)) ingot_status ingot_validate_item(const ingot_item *item, ingot_error *err) {
    (void)item, (void)err;
    return INGOT_OK;
}
__attribute__((weak)) const char *ingot_validate_batch(const ingot_batch *batch) { (void)batch; return NULL; }
__attribute__((weak)) const char *ingot_on_batch_start(const ingot_batch *batch) { (void)batch; return NULL; }
__attribute__((weak)) const char *ingot_on_batch_complete(const ingot_batch *batch, bool success) {
    (void)batch, (void)success;
    return NULL;
}
__attribute__((weak)) void ingot_on_item_error(const ingot_item *item, const ingot_error *error) { (void)item, (void)error; }

static ingot_item item_from_wit(exports_ingot_processor_processor_item_t *w) {
    ingot_item item = {from_wit(&w->id), w->index, from_wit(&w->data), w->attempt, NULL};
    item.json = ingot_json_parse(item.data);
    exports_ingot_processor_processor_item_free(w);
    return item;
}

static ingot_batch batch_from_wit(exports_ingot_processor_processor_batch_info_t *w) {
    ingot_batch b = {
        from_wit(&w->id), from_wit(&w->batch_type), w->item_count, w->completed, w->failed, w->skipped,
        from_wit(&w->metadata), from_wit(&w->source), w->retry_count,
        w->parent_id.is_some ? from_wit(&w->parent_id.val) : NULL, w->dry_run,
    };
    exports_ingot_processor_processor_batch_info_free(w);
    return b;
}

static void error_to_wit(exports_ingot_processor_processor_item_error_t *out, const ingot_error *err) {
    out->tag = err->kind == INGOT_RETRYABLE ? INGOT_PROCESSOR_TYPES_ITEM_ERROR_RETRYABLE
             : err->kind == INGOT_SKIP      ? INGOT_PROCESSOR_TYPES_ITEM_ERROR_SKIP
                                            : INGOT_PROCESSOR_TYPES_ITEM_ERROR_INVALID;
    ingot_processor_types_error_detail_t *d = &out->val.invalid; /* the three cases share one layout */
    to_wit(&d->message, err->message ? err->message : "the processor refused the item");
    option_to_wit(&d->code, err->code);
    option_to_wit(&d->field, err->field);
}

static bool hook_result(const char *message, import_processor_string_t *err) {
    if (message) to_wit(err, message);
    arena_free();
    return message == NULL;
}

bool exports_ingot_processor_processor_validate_batch(exports_ingot_processor_processor_batch_info_t *batch, import_processor_string_t *err) {
    ingot_batch b = batch_from_wit(batch);
    return hook_result(ingot_validate_batch(&b), err);
}

bool exports_ingot_processor_processor_on_batch_start(exports_ingot_processor_processor_batch_info_t *batch, import_processor_string_t *err) {
    ingot_batch b = batch_from_wit(batch);
    return hook_result(ingot_on_batch_start(&b), err);
}

bool exports_ingot_processor_processor_on_batch_complete(exports_ingot_processor_processor_batch_info_t *batch, bool success, import_processor_string_t *err) {
    ingot_batch b = batch_from_wit(batch);
    return hook_result(ingot_on_batch_complete(&b, success), err);
}

bool exports_ingot_processor_processor_validate_item(exports_ingot_processor_processor_item_t *item, exports_ingot_processor_processor_item_error_t *err) {
    ingot_item it = item_from_wit(item);
    ingot_error e = {0};
    bool ok = ingot_validate_item(&it, &e) == INGOT_OK;
    if (!ok) error_to_wit(err, &e);
    arena_free();
    return ok;
}

bool exports_ingot_processor_processor_process_item(exports_ingot_processor_processor_item_t *item, exports_ingot_processor_processor_outcome_t *ret, exports_ingot_processor_processor_item_error_t *err) {
    ingot_item it = item_from_wit(item);
    ingot_outcome out = {0};
    ingot_error e = {0};
    bool ok = ingot_process_item(&it, &out, &e) == INGOT_OK;
    if (ok) {
        option_to_wit(&ret->target_table, out.target_table);
        option_to_wit(&ret->target_id, out.target_id);
        option_to_wit(&ret->processed_data, out.processed_data);
    } else {
        error_to_wit(err, &e);
    }
    arena_free();
    return ok;
}

void exports_ingot_processor_processor_on_item_error(exports_ingot_processor_processor_item_t *item, exports_ingot_processor_processor_item_error_t *error) {
    ingot_item it = item_from_wit(item);
    ingot_processor_types_error_detail_t *d = &error->val.invalid;
    ingot_error e = {
        error->tag == INGOT_PROCESSOR_TYPES_ITEM_ERROR_RETRYABLE ? INGOT_RETRYABLE
        : error->tag == INGOT_PROCESSOR_TYPES_ITEM_ERROR_SKIP    ? INGOT_SKIP
                                                                 : INGOT_INVALID,
        from_wit(&d->message), d->code.is_some ? from_wit(&d->code.val) : NULL,
        d->field.is_some ? from_wit(&d->field.val) : NULL,
    };
    exports_ingot_processor_processor_item_error_free(error);
    ingot_on_item_error(&it, &e);
    arena_free();
}
