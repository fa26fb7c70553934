//! Generates Stratum's man pages and shell completions from the clap definitions that the
//! programs parse (`stratum::cli::command()`, `stratum_initramfs::cli::Cli`), so every verb,
//! including one added later, gets a page and completions without anything written here.
//!
//! Written text (DESCRIPTION additions, EXAMPLES, FILES, SEE ALSO) lives in `docgen/man/`,
//! one file per page (see [`markup`]); pages with no clap definition (configuration files,
//! `stratum-prepare-root(8)`) are written whole there. Defaults and exit statuses the text
//! quotes come from the code (see [`values`]); the exit-status table from
//! `docs/exit-status.md`, its one place.

#![deny(unsafe_code)]

pub mod completions;
pub mod man;
pub mod markup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::CommandFactory;

/// The written text of the pages.
pub const TEXT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man");
/// The exit-status table.
pub const EXIT_STATUS_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/exit-status.md");

/// The clap-defined programs, built (global options propagated into every verb).
pub fn programs() -> Vec<clap::Command> {
    let mut initramfs = stratum_initramfs::cli::Cli::command();
    initramfs.build();
    vec![stratum::cli::command(), initramfs]
}

/// What `@NAME@` in the written text stands for: values taken from the code.
pub fn values() -> BTreeMap<&'static str, String> {
    let c = stratum::config::Config::default();
    let i = stratum_initramfs::Config::default();
    let lower = |d: &dyn std::fmt::Debug| format!("{d:?}").to_lowercase();
    BTreeMap::from([
        ("VERSION", env!("CARGO_PKG_VERSION").to_string()),
        ("BOOT_TRIES", c.boot_tries.to_string()),
        (
            "MAX_BOOT_TRIES",
            stratum::config::MAX_BOOT_TRIES.to_string(),
        ),
        ("HEALTH_CHECK_TIMEOUT", c.health_check_timeout.to_string()),
        ("ON_FAILURE", lower(&c.on_failure)),
        (
            "AUTOMATIC_UPDATE_POLICY",
            c.automatic_update.policy.as_str().to_string(),
        ),
        (
            "NETWORK_CONNECT_TIMEOUT",
            c.network.connect_timeout.to_string(),
        ),
        (
            "NETWORK_LOW_SPEED_LIMIT",
            c.network.low_speed_limit.to_string(),
        ),
        (
            "NETWORK_LOW_SPEED_TIME",
            c.network.low_speed_time.to_string(),
        ),
        (
            "EXIT_UNCHANGED",
            stratum::commands::EXIT_UNCHANGED.to_string(),
        ),
        (
            "ROOT_TIMEOUT",
            stratum_prepare_root::DEFAULT_ROOT_TIMEOUT_SECS.to_string(),
        ),
        (
            "REBOOT_DELAY",
            stratum_prepare_root::DEFAULT_REBOOT_DELAY_SECS.to_string(),
        ),
        (
            "DEFAULT_INITS",
            stratum_prepare_root::DEFAULT_INITS.join(", "),
        ),
        ("INITRAMFS_MODE", lower(&i.mode)),
        ("INITRAMFS_FIRMWARE", i.firmware.to_string()),
        ("INITRAMFS_ZSTD_LEVEL", i.zstd_level.to_string()),
        ("INITRAMFS_ZSTD_THREADS", i.zstd_threads.to_string()),
    ])
}

/// The rows `| status | meaning |` of the exit-status table in `markdown`.
pub fn exit_codes(markdown: &str) -> Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    for line in markdown.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if let [status, meaning] = cells.as_slice() {
            let status = status.trim_matches('`');
            if !status.is_empty() && status.bytes().all(|b| b.is_ascii_digit()) {
                rows.push((status.to_string(), meaning.replace("**", "")));
            }
        }
    }
    if rows.is_empty() {
        bail!("no `| status | meaning |` rows in the exit-status table");
    }
    Ok(rows)
}

/// The pages' date: `SOURCE_DATE_EPOCH` (reproducible-builds.org) as YYYY-MM-DD, else the
/// version, so that the same sources make the same pages.
fn date() -> Result<String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            let secs: u64 = v
                .trim()
                .parse()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?;
            let iso = stratum::commands::status::format_timestamp(secs);
            Ok(iso[..10].to_string())
        }
        _ => Ok(format!("version {}", env!("CARGO_PKG_VERSION"))),
    }
}

/// Writes `bytes` to `path`, making its parent directories.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes every man page under `out/man/manN/` and every completion under `out/` (laid out
/// as `$(PREFIX)/share`); returns the files written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let values = values();
    let table = std::fs::read_to_string(EXIT_STATUS_DOC)
        .with_context(|| format!("reading {EXIT_STATUS_DOC}"))?;
    let exit_codes = exit_codes(&table).context(EXIT_STATUS_DOC)?;
    let src = man::Sources {
        text_dir: Path::new(TEXT_DIR),
        values: &values,
        exit_codes: &exit_codes,
        version: env!("CARGO_PKG_VERSION"),
        date: &date()?,
    };
    let mut pages = Vec::new();
    let mut written = Vec::new();
    for cmd in programs() {
        pages.extend(man::command_pages(&cmd, &src)?);
        written.extend(completions::generate(&cmd, out)?);
    }
    let names: Vec<String> = pages
        .iter()
        .filter_map(|p| p.file.rsplit_once('.').map(|(n, _)| n.to_string()))
        .collect();
    for file in man::standalone_files(src.text_dir, &names)? {
        pages.push(man::standalone_page(&file, &src)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &pages {
        if !seen.insert(p.file.as_str()) {
            bail!(
                "two man pages are named {}: rename one in man::RENAMES",
                p.file
            );
        }
    }
    let man_dir = out.join("man");
    for p in pages {
        let path = man::dir_for(&man_dir, &p.file).join(&p.file);
        write(&path, p.roff.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
