//! Stratum's initramfs generator: builds reproducible native images whose `/init` is
//! `stratum-prepare-root`, and reads any initramfs for inspection.
//!
//! The parts: [`newc`] (the cpio format), [`modules`] (kernel module resolution from depmod's
//! index), [`image`] (assembling and writing an image) and [`inspect`] (listing images, including
//! concatenated and compressed ones).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod image;
pub mod inspect;
pub mod modules;
pub mod newc;
mod output;
pub mod rootfs;
#[cfg(test)]
mod testutil;

pub use image::{build, BuildOptions, BuildReport, DEFAULT_MODULES};
pub use inspect::list;
