//! The host integration tests of `stratum`, one module a file beside this one, built as one
//! test binary: every binary links the whole program, so one link instead of one per file.
//! Run one file's tests with `cargo test --release -p stratum --test integration hostile::`.

mod common;

mod automatic;
mod bootset;
mod compose;
mod delivery;
mod deployments;
mod host;
mod hostile;
mod initramfs;
mod kargs;
mod layering;
mod network;
mod progress;
mod reports;
mod signatures;
mod systemd_boot;
mod trust;
