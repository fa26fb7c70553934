//! The fatal errors of a boot, each saying what failed and on which path or device, so the
//! console report is useful without a shell.

use crate::confine::ConfineError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// A fatal boot error.
#[derive(Debug)]
pub enum BootError {
    /// A required kernel argument is missing.
    MissingKarg(&'static str),
    /// The root device did not show up in time.
    RootNotFound {
        /// The `root=` value.
        spec: String,
        /// How long we waited.
        timeout_secs: u64,
    },
    /// The root device has no recognisable filesystem and no `rootfstype=` was given.
    UnknownFilesystem {
        /// The device.
        device: PathBuf,
        /// Types tried, if any.
        tried: Vec<String>,
    },
    /// `ostree=` did not name a valid deployment.
    Deployment {
        /// The `ostree=` value.
        arg: String,
        /// Why.
        err: ConfineError,
    },
    /// A system call on a path failed.
    Sys {
        /// What we were doing (`mount /sysroot`).
        what: String,
        /// The path or device involved.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
    /// No init program to run.
    NoInit {
        /// The candidates tried.
        tried: Vec<String>,
    },
    /// Refused to act (wrong environment).
    Refused(String),
}

impl BootError {
    /// Builds a [`BootError::Sys`] from an `errno`.
    pub fn sys(what: impl Into<String>, path: impl Into<PathBuf>, err: nix::Error) -> BootError {
        BootError::Sys {
            what: what.into(),
            path: path.into(),
            err: io::Error::from_raw_os_error(err as i32),
        }
    }

    /// Builds a [`BootError::Sys`] from an [`io::Error`].
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, err: io::Error) -> BootError {
        BootError::Sys {
            what: what.into(),
            path: path.into(),
            err,
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::MissingKarg(k) => write!(f, "the kernel command line has no {k}= argument"),
            BootError::RootNotFound { spec, timeout_secs } => write!(
                f,
                "root device root={spec} not found after {timeout_secs} s \
                 (missing driver in the initramfs, or wrong root=?)"
            ),
            BootError::UnknownFilesystem { device, tried } if tried.is_empty() => write!(
                f,
                "no known filesystem on {} (set rootfstype=)",
                device.display()
            ),
            BootError::UnknownFilesystem { device, tried } => write!(
                f,
                "cannot mount {}: no known filesystem signature, tried {}",
                device.display(),
                tried.join(", ")
            ),
            BootError::Deployment { arg, err } => write!(f, "ostree={arg}: {err}"),
            BootError::Sys { what, path, err } => {
                write!(f, "{what} failed on {}: {err}", path.display())
            }
            BootError::NoInit { tried } => {
                write!(
                    f,
                    "no init program found in the deployment (tried {})",
                    tried.join(", ")
                )
            }
            BootError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for BootError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BootError::Deployment { err, .. } => Some(err),
            BootError::Sys { err, .. } => Some(err),
            _ => None,
        }
    }
}
