//! `stratum` that honours failpoints (`FAILPOINTS=NAME=panic`, see `stratum::failpoint`), for
//! the crash tests: the same program as `src/main.rs`, built with the `failpoints` feature.
//!
//! It is a target of its own so that building it never replaces `target/release/stratum`,
//! the binary that is installed and ignores failpoints:
//! `cargo build --release -p stratum --features failpoints --example stratum-failpoints`
//! (`make build-failpoints`) writes `target/release/examples/stratum-failpoints`.

#[path = "../src/main.rs"]
mod stratum_main;

fn main() {
    stratum_main::main();
}
