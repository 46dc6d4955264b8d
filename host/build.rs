// The framework schema is embedded with `sqlx::migrate!`: rebuild when a migration changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
