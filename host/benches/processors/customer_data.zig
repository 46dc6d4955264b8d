//! customer_data's rules in Zig, for `make bench` only: the same checks and the same upsert as
//! processors/customer_data (Rust), so the languages compare on equal work.
const std = @import("std");
const ingot = @cImport(@cInclude("ingot.h"));

fn isEmail(s: []const u8) bool {
    const at = std.mem.indexOfScalar(u8, s, '@') orelse return false;
    const host = s[at + 1 ..];
    if (at == 0 or std.mem.indexOfScalar(u8, host, '@') != null) return false;
    for (s) |c| if (std.ascii.isWhitespace(c)) return false;
    if (host.len < 3) return false;
    return std.mem.indexOfScalar(u8, host[1 .. host.len - 1], '.') != null;
}

/// A helper-owned copy of a field (empty when missing), with `change` applied to each byte.
fn cased(item: *const ingot.ingot_item, name: [*:0]const u8, change: fn (u8) u8) ?[*:0]u8 {
    const copy = ingot.ingot_strdup(ingot.ingot_field(item, name) orelse "") orelse return null;
    for (std.mem.span(copy)) |*c| c.* = change(c.*);
    return copy;
}

fn invalid(err: *ingot.ingot_error, code: [*:0]const u8, field: [*:0]const u8, message: [*:0]const u8) ingot.ingot_status {
    return ingot.ingot_fail(err, ingot.INGOT_INVALID, code, field, "%s", message);
}

export fn ingot_process_item(item: *const ingot.ingot_item, out: *ingot.ingot_outcome, err: *ingot.ingot_error) ingot.ingot_status {
    const email = cased(item, "email", std.ascii.toLower) orelse return ingot.INGOT_RETRYABLE;
    const country = cased(item, "country", std.ascii.toUpper) orelse return ingot.INGOT_RETRYABLE;
    const name = ingot.ingot_field(item, "name");
    if (!isEmail(std.mem.span(email))) return invalid(err, "invalid_email", "email", "email is not a valid address");
    if (name == null) return invalid(err, "missing_name", "name", "name is required");
    const c = std.mem.span(country);
    if (c.len != 0 and !(c.len == 2 and std.ascii.isUpper(c[0]) and std.ascii.isUpper(c[1])))
        return invalid(err, "invalid_country", "country", "country must be 2 letters");
    const country_or_null: ?[*:0]const u8 = if (c.len == 0) null else country;
    const params = [_]ingot.ingot_value{ ingot.ingot_text(email), ingot.ingot_text(name), ingot.ingot_text(country_or_null) };
    var sql: ingot.ingot_sql_error = undefined;
    const rows = ingot.ingot_query(
        "INSERT INTO customers (email, name, country) VALUES ($1, $2, $3) ON CONFLICT (email) DO UPDATE " ++
            "SET name = EXCLUDED.name, country = EXCLUDED.country, updated_at = now() RETURNING id",
        &params,
        params.len,
        &sql,
    ) orelse return ingot.ingot_sql_fail(err, &sql);
    const id = ingot.ingot_rows_get(rows, 0, "id");
    const data = ingot.ingot_object_new();
    ingot.ingot_object_str(data, "email", email);
    ingot.ingot_object_str(data, "name", name);
    ingot.ingot_object_str(data, "country", country_or_null);
    return ingot.ingot_done(out, "customers", if (id) |v| v.*.text else null, ingot.ingot_object_end(data));
}
