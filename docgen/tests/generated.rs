//! Runs the real `stratum-docgen` and checks what it wrote: a man page for every command and
//! subcommand naming each of its options, pages that groff renders without warnings, a bash
//! completion that bash loads and that completes verbs and options, and configuration docs
//! that quote the defaults the code has.

use std::path::{Path, PathBuf};
use std::process::Command;

use stratum_docgen::man::page_name;

fn generate() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("share");
    let o = Command::new(env!("CARGO_BIN_EXE_stratum-docgen"))
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "1795000000")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "stratum-docgen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (d, out)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `--name` as roff writes it.
fn roff_flag(long: &str) -> String {
    format!("\\-\\-{}", long.replace('-', "\\-"))
}

/// Checks the page of `cmd` (at `path`) and its subcommands; returns how many were checked.
fn check_tree(man8: &Path, cmd: &clap::Command, path: &mut Vec<String>) -> usize {
    path.push(cmd.get_name().to_string());
    let file = man8.join(format!("{}.8", page_name(path)));
    let page = read(&file);
    let top = path.len() == 1;
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        // Global options are described on the top page only; the others name them.
        if a.is_global_set() && !top {
            let long = a.get_long().unwrap();
            assert!(
                page.contains("GLOBAL OPTIONS") && page.contains(&roff_flag(long)),
                "{}: --{long} is not named",
                file.display()
            );
            continue;
        }
        let shown = match a.get_long() {
            Some(long) => roff_flag(long),
            None => format!("\\fI{}\\fR", a.get_value_names().unwrap()[0]),
        };
        assert!(
            page.contains(&shown),
            "{} lacks {shown}:\n{page}",
            file.display()
        );
        if let Some(help) = a.get_help() {
            let first_word = help.to_string().split(' ').next().unwrap().to_string();
            let first_word = first_word.replace('-', "\\-").replace('\'', "\\*(Aq");
            assert!(
                page.contains(&first_word),
                "{}: help of {shown}",
                file.display()
            );
        }
    }
    assert!(page.contains(".SH \"EXIT STATUS\""), "{}", file.display());
    let mut n = 1;
    // clap's own `help` verb gets no page: `--help` and the pages say the same.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        for alias in sub.get_visible_aliases() {
            let alias_page = man8.join(format!("{}-{alias}.8", page_name(path)));
            let target = page_name(&[path.clone(), vec![sub.get_name().to_string()]].concat());
            assert_eq!(read(&alias_page), format!(".so man8/{target}.8\n"));
        }
        n += check_tree(man8, sub, path);
    }
    path.pop();
    n
}

#[test]
fn every_command_and_subcommand_has_a_page_with_its_options() {
    let (_d, out) = generate();
    let man8 = out.join("man/man8");
    let mut checked = 0;
    for cmd in stratum_docgen::programs() {
        checked += check_tree(&man8, &cmd, &mut Vec::new());
    }
    assert!(checked >= 25, "only {checked} pages");
    // The verbs the brief of each page names, and the aliases' pages.
    for page in [
        "stratum.8",
        "stratum-upgrade.8",
        "stratum-update.8",
        "stratum-switch.8",
        "stratum-status.8",
        "stratum-rollback.8",
        "stratum-compose-rootfs.8",
        "stratum-install-to-disk.8",
        "stratum-initramfs-client.8",
        "stratum-initramfs.8",
        "stratum-prepare-root.8",
    ] {
        assert!(man8.join(page).is_file(), "{page}");
    }
    let status = read(&man8.join("stratum-status.8"));
    assert!(
        status.contains("yaml") && status.contains("human"),
        "{status}"
    );
    let top = read(&man8.join("stratum.8"));
    assert!(
        top.contains("stratum\\-upgrade(8)") && top.contains("update"),
        "{top}"
    );
    let compose = read(&man8.join("stratum-compose-rootfs.8"));
    assert!(!compose.contains("\\-\\-sysroot"), "{compose}");
    let prepare = read(&man8.join("stratum-prepare-root.8"));
    assert!(prepare.contains("stratum.root\\-timeout") && prepare.contains("initrd\\-setup"));
}

#[test]
fn exit_statuses_come_from_the_one_table() {
    let (_d, out) = generate();
    let top = read(&out.join("man/man8/stratum.8"));
    let table = read(Path::new(stratum_docgen::EXIT_STATUS_DOC));
    let rows = stratum_docgen::exit_codes(&table).unwrap();
    let unchanged = stratum::commands::EXIT_UNCHANGED.to_string();
    assert!(rows.iter().any(|(s, _)| *s == unchanged), "{rows:?}");
    for (status, _) in &rows {
        assert!(top.contains(&format!(".TP\n\\fB{status}\\fR")), "{status}");
    }
    let upgrade = read(&out.join("man/man8/stratum-upgrade.8"));
    assert!(upgrade.contains(&unchanged));
    let rollback = read(&out.join("man/man8/stratum-rollback.8"));
    assert!(rollback.contains("See EXIT STATUS in stratum(8)"));
}

#[test]
fn configuration_pages_quote_the_code_defaults() {
    let (_d, out) = generate();
    let toml = read(&out.join("man/man5/stratum.toml.5"));
    let c = stratum::config::Config::default();
    for (key, default) in [
        ("boot\\-tries", c.boot_tries.to_string()),
        (
            "health\\-check\\-timeout",
            c.health_check_timeout.to_string(),
        ),
    ] {
        let at = toml
            .find(&format!("\\fB{key} ="))
            .unwrap_or_else(|| panic!("{key}"));
        let entry = &toml[at..toml[at..].find(".TP").map_or(toml.len(), |e| at + e)];
        assert!(entry.contains(&format!("Default {default}.")), "{entry}");
    }
    assert!(read(&out.join("man/man5/stratum-kargs.d.5")).contains("match\\-architectures"));
    let i = read(&out.join("man/man5/stratum-initramfs.toml.5"));
    let zstd = stratum_initramfs::Config::default().zstd_level;
    assert!(i.contains(&format!("Default {zstd}.")), "{i}");
}

/// The documentation of the configuration files names every key with its default, as the
/// code has them.
#[test]
fn configuration_md_quotes_the_code_defaults() {
    let doc = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"));
    let v = stratum_docgen::values();
    for (key, placeholder) in [
        ("boot-tries", "BOOT_TRIES"),
        ("on-failure", "ON_FAILURE"),
        ("health-check-timeout", "HEALTH_CHECK_TIMEOUT"),
        ("policy", "AUTOMATIC_UPDATE_POLICY"),
        ("connect-timeout", "NETWORK_CONNECT_TIMEOUT"),
        ("low-speed-limit", "NETWORK_LOW_SPEED_LIMIT"),
        ("low-speed-time", "NETWORK_LOW_SPEED_TIME"),
        ("mode", "INITRAMFS_MODE"),
        ("firmware", "INITRAMFS_FIRMWARE"),
        ("zstd-level", "INITRAMFS_ZSTD_LEVEL"),
        ("zstd-threads", "INITRAMFS_ZSTD_THREADS"),
        ("stratum.root-timeout", "ROOT_TIMEOUT"),
        ("stratum.reboot-delay", "REBOOT_DELAY"),
    ] {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}")))
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{key}`"));
        assert!(
            row.contains(&format!("`{}`", v[placeholder])),
            "docs/configuration.md: `{key}` should default to {}: {row}",
            v[placeholder]
        );
    }
}

#[test]
fn groff_renders_every_page_without_warnings() {
    let (_d, out) = generate();
    let mut pages = 0;
    for section in ["man5", "man8"] {
        for e in std::fs::read_dir(out.join("man").join(section)).unwrap() {
            let p = e.unwrap().path();
            if read(&p).starts_with(".so ") {
                continue;
            }
            let o = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(&p)
                .output()
                .expect("groff (Debian: groff-base)");
            assert!(
                o.status.success() && o.stderr.is_empty(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            pages += 1;
        }
    }
    assert!(pages > 20);
}

/// Sources the bash completion in bash and asks it to complete `words` (the last one being
/// completed); returns the candidates.
fn bash_complete(file: &Path, words: &[&str]) -> Vec<String> {
    let script = r#"
        set -u
        source "$1"; shift
        spec=$(complete -p stratum) || exit 3
        fn=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
        COMP_WORDS=("$@")
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        "$fn" stratum "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script, "bash"])
        .arg(file)
        .args(words)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_verbs_and_options() {
    let (_d, out) = generate();
    let bash = out.join("bash-completion/completions/stratum");
    assert_eq!(bash_complete(&bash, &["stratum", "upg"]), ["upgrade"]);
    let verbs = bash_complete(&bash, &["stratum", ""]);
    for v in ["status", "upgrade", "update", "rollback", "switch", "kargs"] {
        assert!(verbs.iter().any(|c| c == v), "{v} not in {verbs:?}");
    }
    assert!(
        !verbs.iter().any(|c| c == "finalize-staged"),
        "hidden verb completed"
    );
    assert_eq!(
        bash_complete(&bash, &["stratum", "status", "--form"]),
        ["--format"]
    );
    let formats = bash_complete(&bash, &["stratum", "status", "--format", ""]);
    for f in ["human", "json", "yaml"] {
        assert!(formats.iter().any(|c| c == f), "{f} not in {formats:?}");
    }
    let zsh = read(&out.join("zsh/vendor-completions/_stratum"));
    assert!(zsh.starts_with("#compdef stratum") && zsh.contains("upgrade"));
    let fish = read(&out.join("fish/vendor_completions.d/stratum.fish"));
    assert!(fish.contains("complete -c stratum") && fish.contains("rollback"));
    assert!(out
        .join("bash-completion/completions/stratum-initramfs")
        .is_file());
}

/// Every `man:` page the systemd units and the dracut module name is generated.
#[test]
fn units_name_pages_that_exist() {
    let (_d, out) = generate();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut named = 0;
    for dir in ["systemd", "dracut"] {
        for e in std::fs::read_dir(src.join(dir)).unwrap() {
            let p = e.unwrap().path();
            for line in read(&p).lines() {
                let Some(docs) = line.strip_prefix("Documentation=") else {
                    continue;
                };
                for page in docs
                    .split_whitespace()
                    .filter_map(|d| d.strip_prefix("man:"))
                {
                    let (name, section) = page.trim_end_matches(')').split_once('(').unwrap();
                    let file = out.join(format!("man/man{section}/{name}.{section}"));
                    assert!(file.is_file(), "{}: {page} is not generated", p.display());
                    named += 1;
                }
            }
        }
    }
    assert!(named >= 4, "{named}");
}
