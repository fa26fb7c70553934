//! Shell completions (bash, zsh, fish) from the clap definitions, at the paths the shells'
//! packages look in, relative to the output directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Where each shell's completion for `bin` goes under `$(PREFIX)/share`.
pub fn relpath(shell: Shell, bin: &str) -> PathBuf {
    match shell {
        Shell::Bash => format!("bash-completion/completions/{bin}").into(),
        Shell::Zsh => format!("zsh/vendor-completions/_{bin}").into(),
        Shell::Fish => format!("fish/vendor_completions.d/{bin}.fish").into(),
        other => format!("{other}/{bin}").into(),
    }
}

/// The shells completions are generated for.
pub const SHELLS: &[Shell] = &[Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes the completions of `cmd` for every shell in [`SHELLS`] under `share`.
pub fn generate(cmd: &clap::Command, share: &Path) -> Result<Vec<PathBuf>> {
    let bin = cmd.get_name().to_string();
    let mut written = Vec::new();
    for &shell in SHELLS {
        let path = share.join(relpath(shell, &bin));
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut visible(cmd), &bin, &mut buf);
        crate::write(&path, &buf).with_context(|| format!("{shell} completion of {bin}"))?;
        written.push(path);
    }
    Ok(written)
}

/// `cmd` without the hidden subcommands and arguments (internal verbs, options that mean
/// nothing there), which completions should not offer: clap_complete's bash generator lists
/// them. What completion needs is kept: names, aliases, arguments and their values.
fn visible(cmd: &clap::Command) -> clap::Command {
    let mut c = clap::Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .map(visible),
        )
        .visible_aliases(cmd.get_visible_aliases().map(str::to_string));
    if let Some(about) = cmd.get_about() {
        c = c.about(about.clone());
    }
    if let Some(v) = cmd.get_version() {
        c = c.version(v.to_string());
    }
    c
}
