//! Stratum's initramfs generator: builds reproducible native images whose `/init` is
//! `stratum-prepare-root`, and reads any initramfs for inspection.
//!
//! A build goes spec → plan → image: a [`BuildSpec`] says what is wanted (from [`config`], then
//! command-line words through [`options`]), [`plan::resolve`] reads everything the image is
//! made from into a [`Plan`], whose [`Plan::input_digest`] keys caches, and
//! [`image::build_plan`] writes the image from the plan alone.
//!
//! The parts: [`newc`] (the cpio format), [`modules`] (kernel module resolution from depmod's
//! index, with prepare-root's `fnmatch` for alias patterns), [`modinfo`] (a module's
//! `.modinfo` section), [`firmware`], [`hostonly`] (this machine's root device from sysfs),
//! [`sets`] (the modes' module sets), [`config`] (`initramfs.toml` and drop-ins), [`spec`],
//! [`plan`], [`digest`] (input digests), [`image`] (assembling and writing an image),
//! [`inspect`] (reading images, including concatenated and compressed ones) and [`dracut`]
//! (running dracut inside an OS root, for images made the other way).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod digest;
pub mod dracut;
pub mod firmware;
pub mod hostonly;
pub mod image;
pub mod inspect;
pub mod modinfo;
pub mod modules;
pub mod newc;
pub mod options;
mod output;
pub mod plan;
pub mod rootfs;
pub mod sets;
pub mod spec;
#[cfg(test)]
mod testutil;

pub use config::{Config, Mode};
pub use image::{build, build_plan, build_spec, BuildReport};
pub use inspect::{for_each_member, inspect, list};
pub use options::{apply_args, SpecArgs};
pub use plan::Plan;
pub use sets::{DEFAULT_MODULES, GENERIC_ALWAYS, GENERIC_DRIVERS};
pub use spec::{BuildOptions, BuildSpec, Include};
