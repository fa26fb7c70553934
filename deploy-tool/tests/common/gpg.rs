//! A throw-away GnuPG home for the tests that sign commits and summaries.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use super::succeeded;

/// The stdout of a command (`gpg`, `ostree`) that must have succeeded.
fn ok(out: Output) -> String {
    succeeded(out, "command")
}

/// A throw-away GnuPG home with a short path (the agent's socket path is limited), whose agent
/// is killed on drop.
pub struct Gpg {
    pub home: tempfile::TempDir,
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

impl Gpg {
    pub fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("sg")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Gpg { home }
    }

    pub fn gpg(&self, args: &[&str]) -> Output {
        Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--no-tty"])
            .args(args)
            .output()
            .expect("running gpg (apt-get install gnupg)")
    }

    /// Generates a signing key for `email`; returns its fingerprint.
    pub fn gen_key(&self, name: &str, email: &str) -> String {
        ok(self.gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <{email}>"),
            "ed25519",
            "sign",
            "never",
        ]));
        let list = ok(self.gpg(&["--with-colons", "--list-keys", email]));
        list.lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .unwrap_or_else(|| panic!("no fingerprint for {email} in:\n{list}"))
    }

    /// Exports the public key `fpr` (armored) to `path`.
    pub fn export(&self, fpr: &str, path: &Path) {
        let out = ok(self.gpg(&["--armor", "--export", fpr]));
        assert!(
            out.contains("BEGIN PGP PUBLIC KEY BLOCK"),
            "gpg exported no public key for {fpr}"
        );
        fs::write(path, out).unwrap();
    }

    /// Signs `commit` in `repo` with the key `fpr` (a detached signature, as ostree does).
    pub fn sign(&self, repo: &Path, commit: &str, fpr: &str) {
        self.ostree_gpg_sign(&[], repo, commit, fpr);
    }

    /// Removes the signature of `fpr` from `commit`.
    pub fn unsign(&self, repo: &Path, commit: &str, fpr: &str) {
        self.ostree_gpg_sign(&["--delete"], repo, commit, fpr);
    }

    fn ostree_gpg_sign(&self, flags: &[&str], repo: &Path, commit: &str, fpr: &str) {
        let out = Command::new("ostree")
            .arg("gpg-sign")
            .args(flags)
            .arg("--repo")
            .arg(repo)
            .arg("--gpg-homedir")
            .arg(self.home.path())
            .args([commit, fpr])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ostree gpg-sign {flags:?} {commit} {fpr} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
