//! The generator's options that shape an image, parsed in one place: `stratum-initramfs build`
//! flattens [`SpecArgs`] into its command line, and [`apply_args`] parses the same definition
//! from a list of words (the `--arg` words that `stratum initramfs --enable` stores in the
//! origin), so both accept exactly the same options with the same syntax.

use anyhow::Result;
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser};

use crate::config::Mode;
use crate::spec::{BuildSpec, Include};

/// Options that change what an image holds; they apply over the configuration files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
#[command(group(ArgGroup::new("modeset").args(["mode", "generic", "hostonly"])))]
pub struct SpecArgs {
    /// Which modules: default (virtio + ext4), generic (most machines), hostonly (this one).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Same as --mode generic: storage and filesystem drivers for most machines.
    #[arg(long)]
    pub generic: bool,
    /// Same as --mode hostonly: the drivers this machine uses to reach its root, from /sys.
    #[arg(long)]
    pub hostonly: bool,
    /// Also include this kernel module and its dependencies (repeatable).
    #[arg(long = "add-module", value_name = "NAME")]
    pub add_modules: Vec<String>,
    /// Never include this module (nor modules that need it) (repeatable).
    #[arg(long = "omit-module", value_name = "NAME")]
    pub omit_modules: Vec<String>,
    /// Copy a file or directory of the root into the image, at DEST or the same path (repeatable).
    #[arg(long = "include", value_name = "SRC[:DEST]")]
    pub includes: Vec<Include>,
    /// Leave out the firmware that modules declare.
    #[arg(long)]
    pub no_firmware: bool,
    /// zstd compression level [default: 3].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub zstd_level: Option<i32>,
}

impl SpecArgs {
    /// Apply the options over `spec` (lists add to the configuration's, single values replace).
    pub fn apply(&self, spec: &mut BuildSpec) {
        if let Some(m) = self.mode {
            spec.mode = m;
        } else if self.generic {
            spec.mode = Mode::Generic;
        } else if self.hostonly {
            spec.mode = Mode::Hostonly;
        }
        spec.add_modules.extend(self.add_modules.iter().cloned());
        spec.omit_modules.extend(self.omit_modules.iter().cloned());
        spec.includes.extend(self.includes.iter().cloned());
        spec.firmware &= !self.no_firmware;
        if let Some(l) = self.zstd_level {
            spec.options.zstd_level = l;
        }
    }

    /// Parse words such as `["--add-module=nvme", "--omit-module", "btrfs", "--generic"]`:
    /// options only (each `--name=value` or `--name value`), no positional words.
    pub fn parse_words(words: &[String]) -> Result<SpecArgs> {
        let matches = Words::command().try_get_matches_from(words).map_err(|e| {
            anyhow::anyhow!("initramfs arguments: {}; known: {}", reason(&e), known())
        })?;
        let words = Words::from_arg_matches(&matches)
            .map_err(|e| anyhow::anyhow!("initramfs arguments: {}", reason(&e)))?;
        Ok(words.args)
    }
}

/// Apply generator options given as separate words (see [`SpecArgs::parse_words`]) to `spec`.
pub fn apply_args(words: &[String], spec: &mut BuildSpec) -> Result<()> {
    SpecArgs::parse_words(words)?.apply(spec);
    Ok(())
}

/// [`SpecArgs`] alone, as a command with no program name, help or version.
#[derive(Debug, Parser)]
#[command(
    name = "initramfs-args",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    color = clap::ColorChoice::Never
)]
struct Words {
    #[command(flatten)]
    args: SpecArgs,
}

/// The first line of clap's message, without its `error: ` prefix.
fn reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The accepted options, as `--name VALUE, --flag, ...`.
fn known() -> String {
    let cmd = Words::command();
    let names: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            Some(match a.get_value_names() {
                Some(v) if a.get_action().takes_values() => format!("--{long} {}", v.join(" ")),
                _ => format!("--{long}"),
            })
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::BuildOptions;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    fn spec() -> BuildSpec {
        BuildSpec::from(BuildOptions::new("/", "k"))
    }

    #[test]
    fn definition_is_valid() {
        Words::command().debug_assert();
    }

    #[test]
    fn accepted_forms() {
        let mut s = spec();
        s.add_modules = vec!["from-config".into()];
        let w = words(&[
            "--add-module=nvme",
            "--omit-module",
            "btrfs",
            "--generic",
            "--include=/etc/a:/b",
            "--include",
            "/etc/c",
            "--no-firmware",
            "--zstd-level=-5",
            "--add-module",
            "dm-crypt",
        ]);
        apply_args(&w, &mut s).unwrap();
        assert_eq!(s.add_modules, ["from-config", "nvme", "dm-crypt"]);
        assert_eq!(s.omit_modules, ["btrfs"]);
        assert_eq!(s.mode, Mode::Generic);
        assert_eq!(
            s.includes,
            [
                "/etc/a:/b".parse().unwrap(),
                "/etc/c".parse::<Include>().unwrap()
            ]
        );
        assert!(!s.firmware);
        assert_eq!(s.options.zstd_level, -5);

        let mut s = spec();
        apply_args(
            &words(&["--mode", "hostonly", "--zstd-level", "19"]),
            &mut s,
        )
        .unwrap();
        assert_eq!((s.mode, s.options.zstd_level), (Mode::Hostonly, 19));
        let mut s = spec();
        apply_args(&words(&["--hostonly"]), &mut s).unwrap();
        assert_eq!(s.mode, Mode::Hostonly);
        // No words: nothing changes.
        let mut s = spec();
        apply_args(&[], &mut s).unwrap();
        assert_eq!(format!("{s:?}"), format!("{:?}", spec()));
    }

    #[test]
    fn bad_words_are_refused_by_name() {
        let err = |w: &[&str]| format!("{:#}", apply_args(&words(w), &mut spec()).unwrap_err());
        let e = err(&["--frobnicate"]);
        assert!(e.contains("'--frobnicate'"), "{e}");
        assert!(
            e.contains("known: --mode MODE, --generic, --hostonly, --add-module NAME"),
            "{e}"
        );
        assert!(e.contains("--zstd-level N") && !e.contains("--help"), "{e}");
        let e = err(&["--add-module"]);
        assert!(e.contains("--add-module") && e.contains("value"), "{e}");
        let e = err(&["--mode=all"]);
        assert!(e.contains("unknown mode \"all\""), "{e}");
        for bad in [
            &["nvme"][..],
            &["--root=/"],
            &["--kver", "6.1"],
            &["-o", "x.img"],
            &["--help"],
            &["--zstd-level=high"],
            &["--include=:x"],
            &["--generic", "--hostonly"],
            &["--add-module=a", "--", "--generic"],
        ] {
            assert!(apply_args(&words(bad), &mut spec()).is_err(), "{bad:?}");
        }
    }
}
