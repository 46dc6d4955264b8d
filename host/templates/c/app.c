/* {{name}}: an Ingot processor. It checks each item and keeps the normalised record; replace the
 * rules and add your database write (ingot_execute, ingot_query). */
#include <ctype.h>
#include <string.h>

#include "ingot.h"

/* A copy of `text`, lower-cased. */
static char *lower(const char *text) {
    char *copy = ingot_strdup(text);
    for (char *c = copy; *c; c++) *c = (char)tolower((unsigned char)*c);
    return copy;
}

/* local@domain.tld, without spaces. */
static bool is_email(const char *text) {
    const char *at = strchr(text, '@');
    if (!at || at == text || strchr(at + 1, '@') || strpbrk(text, " \t")) return false;
    const char *dot = strrchr(at + 1, '.');
    return dot && dot > at + 1 && dot[1] != '\0';
}

ingot_status ingot_process_item(const ingot_item *item, ingot_outcome *out, ingot_error *err) {
    const char *name = ingot_field(item, "name");
    if (!name) return ingot_invalid(err, "missing_name", "name", "the item has no name");
    if (strlen(name) > 200) return ingot_invalid(err, "invalid_name", "name", "name is longer than 200 characters");
    const char *email = ingot_field(item, "email");
    if (!email) return ingot_invalid(err, "missing_email", "email", "the item has no email");
    email = lower(email);
    if (!is_email(email)) return ingot_invalid(err, "invalid_email", "email", "%s is not a valid email address", email);

    ingot_info("item %llu is %s", (unsigned long long)item->index, email);
    ingot_object *record = ingot_object_new();
    ingot_object_str(record, "name", name);
    ingot_object_str(record, "email", email);
    return ingot_done(out, NULL, NULL, ingot_object_end(record));
}
