//! What this proves: a WebAssembly component that is not a processor (a WASI command) is
//! refused with a message naming what it exports instead.

fn main() {
    println!("hello from a command, not a processor");
}
