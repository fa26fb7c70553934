//! VM scenario of `stratum kargs`: arguments appended on the running system are on the kernel
//! command line after a reboot, exactly as written, and gone after they are deleted and the
//! machine reboots again; an argument that GRUB 2.06 cannot pass is refused and leaves the
//! boot set untouched. Run with `cargo test --release -p stratum-vmtests --test kargs` after
//! `make build`.
//!
//! The awkward values go through everything between `stratum kargs` and the kernel: the BLS
//! `options` line, the quoting of the generated `grub.cfg`, GRUB's script parser, the way
//! GRUB's `linux` command joins its arguments again, and the kernel's own parser. The kernel
//! hands arguments it does not know (no `.` in the key) to init as environment variables, so
//! PID 1's initial environment shows how the kernel parsed each of them.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{check, trial, Project};

/// The scenarios run on Debian 13 (trixie): GRUB 2.12 through shim, kernel 6.12.
fn project() -> Project {
    Project::locate()
        .expect("locating the project")
        .on("vm-trixie")
}

/// One awkward argument: what is given to `stratum kargs --append`, the text the kernel must
/// receive for it (in `/proc/cmdline`), and the `key=value` the kernel parses from that.
struct Awkward {
    given: &'static str,
    cmdline: &'static str,
    parsed: &'static str,
}

const AWKWARD: &[Awkward] = &[
    // Spaces: the kernel's double quotes, written around the whole argument as GRUB does.
    Awkward {
        given: r#"zkqspace="a b""#,
        cmdline: r#""zkqspace=a b""#,
        parsed: "zkqspace=a b",
    },
    Awkward {
        given: r#""zkqtwo=c  d""#,
        cmdline: r#""zkqtwo=c  d""#,
        parsed: "zkqtwo=c  d",
    },
    // The kernel has no escapes: these backslashes are part of the values.
    Awkward {
        given: r"zkqsq=it\'s",
        cmdline: r"zkqsq=it\'s",
        parsed: r"zkqsq=it\'s",
    },
    Awkward {
        given: r#"zkqdq=say\"hi\""#,
        cmdline: r#"zkqdq=say\"hi\""#,
        parsed: r#"zkqdq=say\"hi\""#,
    },
    Awkward {
        given: r"zkqbs=C:\\dir\\",
        cmdline: r"zkqbs=C:\\dir\\",
        parsed: r"zkqbs=C:\\dir\\",
    },
    Awkward {
        given: r#""zkqmix=x \'y\' \"z\" \\ w""#,
        cmdline: r#""zkqmix=x \'y\' \"z\" \\ w""#,
        parsed: r#"zkqmix=x \'y\' \"z\" \\ w"#,
    },
    // GRUB script syntax is data.
    Awkward {
        given: "zkqdollar=$HOME${x}$(y)`z`",
        cmdline: "zkqdollar=$HOME${x}$(y)`z`",
        parsed: "zkqdollar=$HOME${x}$(y)`z`",
    },
    Awkward {
        given: "zkqsemi=a;reboot;b&&c||d|e<f>g{h}",
        cmdline: "zkqsemi=a;reboot;b&&c||d|e<f>g{h}",
        parsed: "zkqsemi=a;reboot;b&&c||d|e<f>g{h}",
    },
    Awkward {
        given: "zkqhash=#not-a-comment",
        cmdline: "zkqhash=#not-a-comment",
        parsed: "zkqhash=#not-a-comment",
    },
    Awkward {
        given: "zkqglob=*.img?[ab]",
        cmdline: "zkqglob=*.img?[ab]",
        parsed: "zkqglob=*.img?[ab]",
    },
    Awkward {
        given: r#"zkqall="$x; #y {z} *""#,
        cmdline: r#""zkqall=$x; #y {z} *""#,
        parsed: "zkqall=$x; #y {z} *",
    },
    // Non-ASCII (UTF-8 without the byte 0xA0, which the kernel takes for a space).
    Awkward {
        given: "zkqutf=é日本€",
        cmdline: "zkqutf=é日本€",
        parsed: "zkqutf=é日本€",
    },
];

/// Refused: "à" is C3 A0 in UTF-8, and the kernel splits arguments at the byte A0.
const REFUSED: &str = "zkqrefused=voilà";

/// Quotes a word for the guest's shell.
fn sh(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn scenario() -> String {
    let append: String = AWKWARD
        .iter()
        .map(|a| format!(" --append {}", sh(a.given)))
        .collect();
    let delete: String = AWKWARD
        .iter()
        .map(|a| format!(" --delete {}", sh(a.given)))
        .collect();
    format!(
        r#"
has_arg() {{ tr ' ' '\n' < /proc/cmdline | grep -qx "$1" && echo yes || echo no; }}
boot_set() {{ readlink /boot/loader; sha256sum /boot/loader/entries/* /boot/loader/grub.cfg; }}
observe() {{
    cp /proc/cmdline "$out/boot-$n.cmdline_raw"
    cp /proc/1/environ "$out/boot-$n.environ"
    grep -h '^options ' /boot/loader/entries/*.conf > "$out/boot-$n.options"
}}
boot_1() {{
    observe
    result has_test "$(has_arg quiet.test=1)"
    result deploy_dirs "$(ls /ostree/deploy/default/deploy | grep -vc origin)"
    result set_before "$(boot_set)"
    stratum kargs --append {refused} 2> "$out/boot-$n.refused_err"; result refused_rc $?
    result set_after "$(boot_set)"
    stratum kargs --append quiet.test=1{append}; result append_rc $?
    result kargs "$(stratum kargs)"
    request_reboot
}}
boot_2() {{
    observe
    result has_test "$(has_arg quiet.test=1)"
    result cmdline "$(cat /proc/cmdline)"
    stratum kargs --delete quiet.test=1{delete}; result delete_rc $?
    request_reboot
}}
boot_3() {{
    observe
    result has_test "$(has_arg quiet.test=1)"
    result cmdline "$(cat /proc/cmdline)"
    result deploy_dirs "$(ls /ostree/deploy/default/deploy | grep -vc origin)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
}}
"#,
        refused = sh(REFUSED),
    )
}

/// What the guest recorded of boot `n`: `/proc/cmdline` (without its newline), PID 1's
/// initial environment, and the `options` line of the only boot entry.
struct Observed {
    cmdline: String,
    environ: BTreeMap<String, String>,
    options: String,
}

fn observed(dir: &std::path::Path, n: u32) -> Result<Observed> {
    let read = |what: &str| {
        let p = dir.join(format!("boot-{n}.{what}"));
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    let raw = String::from_utf8(read("cmdline_raw")?).context("/proc/cmdline is not UTF-8")?;
    let cmdline = raw.strip_suffix('\n').unwrap_or(&raw).to_string();
    let mut environ = BTreeMap::new();
    for var in read("environ")?
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
    {
        let var = String::from_utf8_lossy(var);
        if let Some((k, v)) = var.split_once('=') {
            environ.insert(k.to_string(), v.to_string());
        }
    }
    let options = String::from_utf8(read("options")?)?;
    let lines: Vec<&str> = options.lines().collect();
    ensure!(lines.len() == 1, "expected one boot entry, found {lines:?}");
    let options = lines[0].trim_start_matches("options ").to_string();
    Ok(Observed {
        cmdline,
        environ,
        options,
    })
}

/// The arguments after `ostree=` (which names the boot generation and so changes with it).
fn after_ostree(cmdline: &str) -> Result<&str> {
    let at = cmdline
        .find(" ostree=")
        .context("no ostree= in the command line")?;
    let rest = &cmdline[at + 1..];
    Ok(rest.split_once(' ').map_or("", |(_, r)| r))
}

/// Awkward kernel arguments appended with `stratum kargs` reach `/proc/cmdline` and PID 1's
/// environment exactly, through the BLS entry, the generated `grub.cfg` and GRUB 2.12's
/// `linux` command; deleted, they are gone after the next boot; an argument GRUB cannot pass
/// is refused. Boots: three, under Secure Boot.
fn append_reboot_delete_reboot() -> Result<()> {
    let p = project();
    let img = p.build_image("kargs", "1.0")?;
    let dir = p.workdir("kargs-run")?;
    let (out, test) = img.boot_scenario(&dir, &scenario(), &[], |_| ())?;
    eprintln!("kargs: three boots in {:.0} s", out.elapsed.as_secs_f64());
    check("kargs", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(r.boots() == 3, "expected 3 boots, ran {}", r.boots());
        ensure!(
            r.get(1, "has_test") == "no",
            "quiet.test=1 present at first"
        );
        ensure!(
            r.get(1, "refused_rc") == "1",
            "stratum kargs --append {REFUSED} exited {} (expected 1, refused):\n{}",
            r.get(1, "refused_rc"),
            r.get(1, "refused_err")
        );
        ensure!(
            r.get(1, "refused_err").contains("0xA0"),
            "the refusal does not say why: {}",
            r.get(1, "refused_err")
        );
        ensure!(
            r.get(1, "set_before") == r.get(1, "set_after"),
            "a refused argument changed the boot set:\n{}\n--- became ---\n{}",
            r.get(1, "set_before"),
            r.get(1, "set_after")
        );
        ensure!(
            r.get(1, "append_rc") == "0",
            "stratum kargs --append failed:\n{}",
            r.get(1, "log")
        );
        ensure!(
            r.get(1, "kargs").contains("quiet.test=1"),
            "stratum kargs shows {:?}",
            r.get(1, "kargs")
        );
        ensure!(
            r.get(2, "has_test") == "yes",
            "after the reboot /proc/cmdline lacks quiet.test=1: {}",
            r.get(2, "cmdline")
        );

        let before = observed(&r.dir, 1)?;
        let appended = observed(&r.dir, 2)?;
        let after = observed(&r.dir, 3)?;
        // The kernel received the entry's options line, byte for byte, after GRUB's
        // BOOT_IMAGE=.
        for (n, o) in [(1, &before), (2, &appended), (3, &after)] {
            ensure!(
                o.cmdline.starts_with("BOOT_IMAGE=")
                    && o.cmdline.split_once(' ').map(|(_, r)| r) == Some(o.options.as_str()),
                "boot {n}: /proc/cmdline is not BOOT_IMAGE= and the options line:\n  \
                 /proc/cmdline: {}\n  options:       {}",
                o.cmdline,
                o.options
            );
        }
        let mut want = after_ostree(&before.cmdline)?.to_string();
        want.push_str(" quiet.test=1");
        for a in AWKWARD {
            want.push(' ');
            want.push_str(a.cmdline);
        }
        let got = after_ostree(&appended.cmdline)?;
        ensure!(
            got == want,
            "the kernel command line after appending differs:\n  want: {want}\n  got:  {got}"
        );
        let mut wrong = Vec::new();
        for a in AWKWARD {
            let (k, v) = a.parsed.split_once('=').context("parsed is key=value")?;
            if appended.environ.get(k).map(String::as_str) != Some(v) {
                wrong.push(format!(
                    "{}: want {v:?}, the kernel parsed {:?}",
                    a.given,
                    appended.environ.get(k)
                ));
            }
        }
        ensure!(
            wrong.is_empty(),
            "the kernel parsed arguments differently than given:\n  {}",
            wrong.join("\n  ")
        );

        ensure!(
            r.get(2, "delete_rc") == "0",
            "stratum kargs --delete failed:\n{}",
            r.get(2, "log")
        );
        ensure!(
            r.get(3, "has_test") == "no",
            "after the second reboot quiet.test=1 is still there: {}",
            r.get(3, "cmdline")
        );
        ensure!(
            after_ostree(&after.cmdline)? == after_ostree(&before.cmdline)?,
            "after deleting what was appended, the command line is not the first one:\n  \
             first: {}\n  now:   {}",
            before.cmdline,
            after.cmdline
        );
        ensure!(
            r.get(1, "deploy_dirs") == "1" && r.get(3, "deploy_dirs") == "1",
            "kargs made a deployment: {} then {} deployment directories",
            r.get(1, "deploy_dirs"),
            r.get(3, "deploy_dirs")
        );
        ensure!(
            r.get(3, "failed_units").is_empty(),
            "failed units: {}",
            r.get(3, "failed_units")
        );
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![trial(
        "vm::kargs_append_delete_across_reboots",
        append_reboot_delete_reboot,
    )];
    libtest_mimic::run(&args, trials).exit();
}
