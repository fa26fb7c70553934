//! `stratum remote`: the remotes updates are pulled from.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::Globals;

/// Manage the remotes updates are pulled from
#[derive(Debug, Subcommand)]
pub enum RemoteCmd {
    /// Add a remote (file://, http:// or https:// URL of an ostree repository)
    Add(RemoteAddOpts),
    /// List remotes
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a remote
    Delete {
        /// The remote's name
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct RemoteAddOpts {
    /// The remote's name, used as REMOTE in REMOTE:REF: ASCII letters, digits, '.', '_' and
    /// '-', not starting with '.' or '-'
    pub name: String,
    /// The repository URL: file:///ABSOLUTE/PATH, http://HOST[:PORT][/PATH] or
    /// https://HOST[:PORT][/PATH]
    pub url: String,
    /// Require valid GPG signatures on commits (default)
    #[arg(long, overrides_with = "no_sign_verify")]
    pub sign_verify: bool,
    /// Accept unsigned commits from this remote
    #[arg(long)]
    pub no_sign_verify: bool,
    /// Import the GPG public keys in FILE as trusted for this remote
    #[arg(long, value_name = "FILE")]
    pub gpg_import: Option<PathBuf>,
    /// Also require a valid GPG signature on the remote's summary (its refs and static
    /// deltas), as `stratum compose publish --gpg-sign` writes it
    #[arg(long)]
    pub sign_verify_summary: bool,
}

pub fn run(g: &Globals, c: &RemoteCmd) -> Result<i32> {
    let session = g.session();
    let repo = crate::repo::open(&session.sysroot.repo_path())?;
    match c {
        RemoteCmd::Add(o) => {
            let _lock = session.begin()?;
            let verify = crate::remote::Verify {
                commits: !o.no_sign_verify,
                summary: o.sign_verify_summary,
            };
            crate::remote::add(&repo, &o.name, &o.url, verify, o.gpg_import.as_deref())?;
            let commits = if verify.commits {
                "commits must carry a valid GPG signature"
            } else {
                "commits are NOT signature-checked"
            };
            let summary = if verify.summary {
                ", and so must its summary"
            } else {
                ""
            };
            eprintln!("Added remote {} ({}); {commits}{summary}.", o.name, o.url);
        }
        RemoteCmd::List { json } => {
            let l = crate::remote::list(&repo)?;
            if *json {
                super::print_json(&l)?;
            } else {
                for r in l {
                    let verify = if r.sign_verify {
                        "sign-verify"
                    } else {
                        "no-sign-verify"
                    };
                    let summary = if r.sign_verify_summary {
                        "sign-verify-summary"
                    } else {
                        "no-sign-verify-summary"
                    };
                    println!("{}\t{}\t{verify}\t{summary}", r.name, r.url);
                }
            }
        }
        RemoteCmd::Delete { name } => {
            let _lock = session.begin()?;
            crate::remote::delete(&repo, name)?;
            eprintln!("Deleted remote {name}");
        }
    }
    Ok(0)
}
