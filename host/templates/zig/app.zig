//! {{name}}: an Ingot processor. It checks each item and keeps the normalised record; replace the
//! rules and add your database write (ingot.ingot_execute, ingot.ingot_query).
const std = @import("std");
const ingot = @cImport(@cInclude("ingot.h"));

fn invalid(err: *ingot.ingot_error, code: [*:0]const u8, field: [*:0]const u8, message: [*:0]const u8) ingot.ingot_status {
    return ingot.ingot_fail(err, ingot.INGOT_INVALID, code, field, "%s", message);
}

/// local@domain.tld, without spaces.
fn isEmail(text: []const u8) bool {
    const at = std.mem.indexOfScalar(u8, text, '@') orelse return false;
    const domain = text[at + 1 ..];
    if (at == 0 or std.mem.indexOfScalar(u8, domain, '@') != null) return false;
    if (std.mem.indexOfAny(u8, text, " \t") != null) return false;
    const dot = std.mem.lastIndexOfScalar(u8, domain, '.') orelse return false;
    return dot > 0 and dot + 1 < domain.len;
}

export fn ingot_process_item(item: *const ingot.ingot_item, out: *ingot.ingot_outcome, err: *ingot.ingot_error) ingot.ingot_status {
    const name = ingot.ingot_field(item, "name") orelse return invalid(err, "missing_name", "name", "the item has no name");
    if (std.mem.len(name) > 200) return invalid(err, "invalid_name", "name", "name is longer than 200 characters");
    const field = ingot.ingot_field(item, "email") orelse return invalid(err, "missing_email", "email", "the item has no email");
    // Helper memory lives until the host's call returns: no freeing needed.
    const email = ingot.ingot_strdup(field) orelse return ingot.INGOT_RETRYABLE;
    const text = std.mem.span(email);
    for (text) |*c| c.* = std.ascii.toLower(c.*);
    if (!isEmail(text)) return ingot.ingot_fail(err, ingot.INGOT_INVALID, "invalid_email", "email", "%s is not a valid email address", email);

    ingot.ingot_log(ingot.INGOT_INFO, "item %llu is %s", @as(c_ulonglong, item.index), email);
    const record = ingot.ingot_object_new();
    ingot.ingot_object_str(record, "name", name);
    ingot.ingot_object_str(record, "email", email);
    return ingot.ingot_done(out, null, null, ingot.ingot_object_end(record));
}
