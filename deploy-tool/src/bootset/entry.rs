//! The boot-entry codec: the one place that turns a deployment into its boot entry, bootlink
//! and boot-file paths, and an entry back into a deployment.
//!
//! A deployment in boot generation `N` is booted by
//! `ostree=/ostree/boot.N/<stateroot>/<bootcsum>/<bootserial>`, a bootlink resolving to
//! `../../../deploy/<stateroot>/deploy/<checksum>.<serial>`; its kernel and initramfs are
//! `/boot/ostree/<stateroot>-<bootcsum>/{vmlinuz,initramfs}-<kver>[.img]`. Entries are written
//! as OSTree writes them, so `ostree admin status` reads them.
//!
//! Everything that goes into an entry is checked here before anything is written:
//! - kernel versions become file names and a line of the entry: letters, digits and `._+~-`;
//! - kernel arguments ([`validate_karg`]): each is stored as the exact text the kernel must
//!   receive, the same in the entry's `options` line, in `/proc/cmdline` after a GRUB boot and
//!   after a systemd-boot boot. It must be one argument as the kernel reads it, written
//!   canonically (double quotes around the whole argument when it has a space, as GRUB writes
//!   them), without control characters (a newline would inject lines into the entry and the
//!   GRUB menu), and a text that GRUB 2.06's `linux` command can produce (see
//!   [`super::grubcfg::linux_word`]);
//! - the whole command line must fit the kernel's limit. On x86 the kernel keeps at most
//!   `COMMAND_LINE_SIZE - 1` = 2047 bytes, and GRUB 2.06's `linux` command truncates what it
//!   passes to that size *after* prepending `BOOT_IMAGE=<path> `, silently. A longer line is
//!   refused rather than cut; `ostree=` goes first, so it is never the part that is lost.
//!   (A single argument of several KiB also makes GRUB 2.06's script parser give up on the
//!   whole menu, the rollback entry included; the length limit rules that out too.)

use std::path::Path;

use anyhow::{bail, Context, Result};
use stratum_prepare_root::cmdline::Cmdline;

use super::{bls, grubcfg};
use crate::sysroot::{parse_deploy_name, Deployment, Sysroot};

/// Arguments only this codec writes: `ostree=` names the deployment to boot.
const RESERVED: &[&str] = &[stratum_prepare_root::KARG_OSTREE];

/// The longest kernel command line the kernel keeps on x86 (`COMMAND_LINE_SIZE` is 2048,
/// including the terminating NUL).
pub const MAX_CMDLINE: usize = 2047;

/// The parts of an `ostree=/ostree/boot.N/<stateroot>/<bootcsum>/<bootserial>` argument.
#[derive(Debug, PartialEq, Eq)]
pub struct Bootlink {
    pub bootversion: u8,
    pub stateroot: String,
    pub bootcsum: String,
    pub bootserial: u32,
}

/// Parses an `ostree=` value in the exact form OSTree writes.
pub fn parse_bootlink(arg: &str) -> Result<Bootlink> {
    let parts: Vec<&str> = arg.split('/').collect();
    let bad = || {
        anyhow::anyhow!("ostree={arg} is not of the form /ostree/boot.N/STATEROOT/BOOTCSUM/SERIAL")
    };
    if parts.len() != 6 || !parts[0].is_empty() || parts[1] != "ostree" {
        return Err(bad());
    }
    let bootversion = match parts[2] {
        "boot.0" => 0,
        "boot.1" => 1,
        _ => return Err(bad()),
    };
    if !parts[5].bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(Bootlink {
        bootversion,
        stateroot: parts[3].to_string(),
        bootcsum: parts[4].to_string(),
        bootserial: parts[5].parse().map_err(|_| bad())?,
    })
}

/// The `ostree=` value naming `d` in boot generation `bootversion`.
pub fn bootlink_arg(bootversion: u8, d: &Deployment) -> String {
    format!(
        "/ostree/boot.{bootversion}/{}/{}/{}",
        d.stateroot, d.bootcsum, d.bootserial
    )
}

/// Where a bootlink of `d` points, relative to `ostree/boot.N.M/<stateroot>/<bootcsum>/`.
pub fn bootlink_target(d: &Deployment) -> String {
    format!("../../../deploy/{}/deploy/{}", d.stateroot, d.name())
}

/// `d`'s boot-file directory, relative to `/boot`: `/ostree/<stateroot>-<bootcsum>`.
pub fn boot_dir(d: &Deployment) -> String {
    format!("/ostree/{}-{}", d.stateroot, d.bootcsum)
}

/// The kernel's file name in the boot-file directory.
pub fn vmlinuz_name(kver: &str) -> String {
    format!("vmlinuz-{kver}")
}

/// The initramfs's file name in the boot-file directory.
pub fn initramfs_name(kver: &str) -> String {
    format!("initramfs-{kver}.img")
}

/// The `linux` path of `d`'s entry, relative to `/boot`.
pub fn linux_path(d: &Deployment) -> String {
    format!("{}/{}", boot_dir(d), vmlinuz_name(&d.kver))
}

/// The initrds of `d`'s entry (its own, then overlays), relative to `/boot`.
pub fn initrd_paths(d: &Deployment) -> Vec<String> {
    let mut v = vec![format!("{}/{}", boot_dir(d), initramfs_name(&d.kver))];
    v.extend(d.overlay_initrds.iter().cloned());
    v
}

/// Checks a kernel version taken from an image before it becomes a file name and an entry
/// line.
pub fn validate_kver(kver: &str) -> Result<()> {
    if kver.is_empty()
        || kver.starts_with('.')
        || !kver
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
    {
        bail!(
            "kernel version {kver:?} is not usable as a file name (letters, digits and ._+~- only)"
        );
    }
    Ok(())
}

/// Whether `key` is written by this codec alone (`ostree=`).
pub fn is_reserved(key: &str) -> bool {
    RESERVED.contains(&key)
}

/// Whether `c`'s UTF-8 encoding contains the byte 0xA0, which the kernel takes for a space
/// (`à` is C3 A0, the no-break space C2 A0).
fn has_a0(c: char) -> bool {
    c.encode_utf8(&mut [0; 4]).bytes().any(|b| b == 0xa0)
}

fn a0_reason(c: char) -> String {
    format!(
        "{c:?} (U+{:04X}) is encoded in UTF-8 with the byte 0xA0, which the kernel takes for a \
         space",
        c as u32
    )
}

/// Checks text given for kernel arguments (one argument, or a whole command line) before it
/// is parsed: one line of text, balanced double quotes, and no character whose encoding the
/// kernel would split.
pub fn check_input(what: &str, s: &str) -> Result<()> {
    if s.contains(['\n', '\r', '\0']) {
        bail!("{what} {s:?} contains a newline or NUL; a kernel argument is one line of text");
    }
    if s.matches('"').count() % 2 == 1 {
        bail!("{what} {s:?} has an unbalanced double quote");
    }
    let mut in_quote = false;
    for c in s.chars() {
        if c == '"' {
            in_quote = !in_quote;
        } else if !in_quote && has_a0(c) {
            bail!(
                "{what} {s:?}: {}, so it would split the argument there",
                a0_reason(c)
            );
        }
    }
    Ok(())
}

/// Checks one kernel argument as it will be written: the exact text the kernel must receive.
/// This is the one rule for every argument, whoever asks for it (`stratum kargs`,
/// `install --karg`, an image's `kargs.d`) and whichever loader passes it on.
pub fn validate_karg(arg: &str) -> Result<()> {
    if arg.is_empty() {
        bail!("empty kernel argument");
    }
    if let Some(c) = arg.chars().find(|c| c.is_control()) {
        bail!("kernel argument {arg:?} contains the control character {c:?}");
    }
    if !arg.contains(' ') {
        if let Some(c) = arg.chars().find(|&c| has_a0(c)) {
            bail!(
                "kernel argument {arg:?} cannot be passed through GRUB: {}, and GRUB 2.06 puts \
                 quotes only around an argument with an ASCII space",
                a0_reason(c)
            );
        }
    }
    if arg.matches('"').count() % 2 == 1 {
        bail!(
            "kernel argument {arg:?} has an odd number of double quotes: the kernel would read \
             the arguments after it as part of it"
        );
    }
    let read = Cmdline::parse(arg);
    let mut words: Vec<String> = read.iter().map(ToString::to_string).collect();
    if !read.init_args().is_empty() {
        words.push("--".into());
        words.extend(read.init_args().iter().cloned());
    }
    if words.len() != 1 || words[0] != arg {
        let hint = if arg.contains(' ') && arg.trim_matches('"').contains('"') {
            " (a double quote inside an argument with a space ends the kernel's quoting)"
        } else {
            ""
        };
        bail!(
            "kernel argument {arg:?} is not one argument as the kernel reads it: the kernel \
             would read {}{hint}",
            words.join(" and ")
        );
    }
    grubcfg::linux_word(arg)
        .with_context(|| format!("kernel argument {arg:?} cannot be passed through GRUB"))?;
    Ok(())
}

/// The kernel command line of `d`'s entry in generation `bootversion`: `ostree=` first, then
/// the deployment's arguments. Refused when it would not reach the kernel whole.
pub fn command_line(bootversion: u8, d: &Deployment) -> Result<Vec<String>> {
    validate_kver(&d.kver)?;
    let mut args = vec![format!("ostree={}", bootlink_arg(bootversion, d))];
    for a in &d.kargs {
        validate_karg(a).with_context(|| format!("deployment {}", d.name()))?;
        let key = a.split_once('=').map_or(a.as_str(), |(k, _)| k);
        if is_reserved(key) {
            bail!(
                "deployment {}: {key}= is written by stratum itself",
                d.name()
            );
        }
        args.push(a.clone());
    }
    check_length(&linux_path(d), &args).with_context(|| format!("deployment {}", d.name()))?;
    Ok(args)
}

/// Refuses a command line the kernel would not receive whole. What the kernel receives from
/// GRUB is `BOOT_IMAGE=<linux> ` followed by the arguments.
fn check_length(linux: &str, args: &[String]) -> Result<()> {
    let len = "BOOT_IMAGE=".len() + linux.len() + args.iter().map(|a| 1 + a.len()).sum::<usize>();
    if len > MAX_CMDLINE {
        bail!(
            "the kernel command line would be {len} bytes; the kernel keeps at most \
             {MAX_CMDLINE} (GRUB cuts the rest silently). Remove or shorten kernel arguments \
             (see `stratum kargs`)"
        );
    }
    Ok(())
}

/// Checks the kernel arguments an image asks for (its `kargs.d` defaults, canonical) against
/// the same limit as [`command_line`], with the shortest `ostree=` and `BOOT_IMAGE=` any
/// deployment has (a one-letter stateroot and kernel version): arguments that fail here
/// make every machine refuse to deploy the image.
pub fn check_image_kargs_fit(kargs: &[String]) -> Result<()> {
    let shortest = Deployment {
        stateroot: "s".to_string(),
        checksum: "0".repeat(64),
        serial: 0,
        bootcsum: "0".repeat(64),
        bootserial: 0,
        kver: "k".to_string(),
        kargs: Vec::new(),
        overlay_initrds: Vec::new(),
    };
    let mut args = vec![format!("ostree={}", bootlink_arg(0, &shortest))];
    args.extend(kargs.iter().cloned());
    check_length(&linux_path(&shortest), &args).context(
        "kernel arguments of an image, counted with the shortest ostree= and BOOT_IMAGE= that \
         every machine adds",
    )
}

/// Checks text that becomes part of a boot entry's title (an image's version): a control
/// character would start a new line in the entry and in the GRUB menu.
pub fn check_title(title: &str) -> Result<()> {
    if let Some(c) = title.chars().find(|c| c.is_control()) {
        bail!(
            "{:?} contains the control character {c:?}, which a boot entry title cannot \
             hold: remove it",
            crate::excerpt::line(title)
        );
    }
    Ok(())
}

/// The BLS entry of `d` at position `version` (counted from the end: the default has the
/// highest) in generation `bootversion`.
pub fn to_entry(
    d: &Deployment,
    bootversion: u8,
    title: &str,
    version: usize,
) -> Result<bls::Entry> {
    let options = command_line(bootversion, d)?;
    check_title(title).context("boot entry title")?;
    let mut e = bls::Entry::default();
    e.set("title", title);
    e.set("version", version.to_string());
    e.set("options", options.join(" "));
    e.set("linux", linux_path(d));
    for i in initrd_paths(d) {
        e.push("initrd", i);
    }
    Ok(e)
}

/// The deployment an entry boots, following its bootlink in `sysroot`. The bootlink must point
/// exactly where the writer points it ([`bootlink_target`]): its stateroot comes from the
/// bootlink's own path, so a target in another stateroot, an absolute one or one by a detour
/// would name one deployment here and boot another. The deployment directory itself is not
/// required to exist (the state reader checks that).
pub fn from_entry(sysroot: &Sysroot, e: &bls::Entry) -> Result<Deployment> {
    let options = e.get("options").context("entry has no options line")?;
    let cmdline = Cmdline::parse(options);
    let ostree = cmdline
        .get(stratum_prepare_root::KARG_OSTREE)
        .context("entry has no ostree= argument")?;
    let link = parse_bootlink(ostree)?;
    let path = sysroot.path.join(ostree.trim_start_matches('/'));
    let target = std::fs::read_link(&path).with_context(|| format!("reading bootlink {ostree}"))?;
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (checksum, serial) = parse_deploy_name(name).with_context(|| {
        format!(
            "bootlink {ostree} points to {}, which does not name a deployment; point it at the \
             deployment this entry boots, or repair the boot entries",
            target.display()
        )
    })?;
    let kver = e
        .get("linux")
        .and_then(|l| l.rsplit('/').next())
        .and_then(|f| f.strip_prefix("vmlinuz-"))
        .context("entry's linux line does not name vmlinuz-<kver>")?
        .to_string();
    let kargs = cmdline
        .iter()
        .filter(|p| p.key != stratum_prepare_root::KARG_OSTREE)
        .map(|p| p.to_string())
        .collect();
    let d = Deployment {
        stateroot: link.stateroot,
        checksum,
        serial,
        bootcsum: link.bootcsum,
        bootserial: link.bootserial,
        kver,
        kargs,
        overlay_initrds: e.all("initrd").skip(1).map(str::to_string).collect(),
    };
    let expected = bootlink_target(&d);
    // Compared as bytes: `Path` equality would let a doubled or trailing slash pass.
    if target.as_os_str() != Path::new(&expected).as_os_str() {
        let id = format!("{}/{}", d.stateroot, d.name());
        bail!(
            "bootlink {ostree} points to {}, but it should point to {expected}, as OSTree and \
             stratum write it: any other target (a deployment of another stateroot, an absolute \
             path, a detour through other directories) may boot another deployment than {id}, \
             the one it is read as. If {id} is the deployment this entry boots, point the \
             bootlink back (`ln -sfn {expected} {}`); otherwise repair the boot entries",
            target.display(),
            path.display()
        );
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep() -> Deployment {
        Deployment {
            stateroot: "default".into(),
            checksum: "c".repeat(64),
            serial: 0,
            bootcsum: "b".repeat(64),
            bootserial: 0,
            kver: "6.1.0-18-amd64".into(),
            kargs: vec!["root=UUID=1".into(), "rw".into()],
            overlay_initrds: vec!["/ostree/initramfs-overlays/x.img".into()],
        }
    }

    /// The length of the command line the kernel receives for `d` from GRUB.
    fn received_len(d: &Deployment) -> usize {
        "BOOT_IMAGE=".len()
            + linux_path(d).len()
            + command_line(0, d)
                .unwrap()
                .iter()
                .map(|a| 1 + a.len())
                .sum::<usize>()
    }

    #[test]
    fn bootlinks_parse_strictly() {
        let b = parse_bootlink("/ostree/boot.1/default/abc/0").unwrap();
        assert_eq!(
            b,
            Bootlink {
                bootversion: 1,
                stateroot: "default".into(),
                bootcsum: "abc".into(),
                bootserial: 0
            }
        );
        for bad in [
            "/ostree/boot.2/x/y/0",
            "ostree/boot.0/x/y/0",
            "/ostree/boot.0/x/y",
            "/ostree/boot.0/x/y/z",
            "/ostree/boot.0/x/y/+1",
            "/etc/passwd",
        ] {
            assert!(parse_bootlink(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entry_round_trips_through_the_bootlink() {
        let t = tempfile::tempdir().unwrap();
        let s = Sysroot::new(t.path());
        let d = dep();
        let e = to_entry(&d, 1, "Debian 1.0 (ostree:0)", 2).unwrap();
        assert!(e
            .get("options")
            .unwrap()
            .starts_with("ostree=/ostree/boot.1/default/"));
        let dir = t
            .path()
            .join(format!("ostree/boot.1/default/{}", d.bootcsum));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(bootlink_target(&d), dir.join("0")).unwrap();
        let back = from_entry(&s, &bls::Entry::parse(&e.to_string()).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn bootlinks_are_read_only_in_the_form_they_are_written() {
        let t = tempfile::tempdir().unwrap();
        let s = Sysroot::new(t.path());
        let d = dep();
        let e = bls::Entry::parse(&to_entry(&d, 1, "t", 1).unwrap().to_string()).unwrap();
        let dir = t
            .path()
            .join(format!("ostree/boot.1/default/{}", d.bootcsum));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("0");
        let name = d.name();
        let expected = bootlink_target(&d);
        for bad in [
            // Another stateroot's deployment of the same name: it would boot with `other`'s
            // /var while read as `default`'s.
            format!("../../../deploy/other/deploy/{name}"),
            format!("/ostree/deploy/default/deploy/{name}"),
            format!("../../../deploy/default/deploy/../deploy/{name}"),
            format!("../../../../ostree/deploy/default/deploy/{name}"),
            format!("../../../deploy/default/deploy//{name}"),
            format!("{expected}/"),
            format!("./{expected}"),
            name.clone(),
        ] {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&bad, &link).unwrap();
            let err = format!("{:#}", from_entry(&s, &e).unwrap_err());
            for want in [
                "bootlink /ostree/boot.1/default/",
                &format!("points to {bad}, but it should point to {expected}"),
                &format!("ln -sfn {expected} {}", link.display()),
            ] {
                assert!(err.contains(want), "{bad}: expected {want:?} in: {err}");
            }
        }
        for bad in [
            "../../../deploy/default/var",
            "../../../deploy/default/deploy/x.0",
        ] {
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(bad, &link).unwrap();
            let err = format!("{:#}", from_entry(&s, &e).unwrap_err());
            assert!(err.contains("does not name a deployment"), "{bad}: {err}");
        }
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&expected, &link).unwrap();
        assert_eq!(from_entry(&s, &e).unwrap(), d);
    }

    #[test]
    fn hostile_entries_are_refused() {
        let mut d = dep();
        d.kver = "6.1\ninitrd /evil".into();
        assert!(to_entry(&d, 0, "t", 1).is_err());
        let mut d = dep();
        d.kargs.push("a\nlinux /evil".into());
        assert!(to_entry(&d, 0, "t", 1).is_err());
        let mut d = dep();
        d.kargs.push(format!("big={}", "x".repeat(8192)));
        let e = format!("{:#}", to_entry(&d, 0, "t", 1).unwrap_err());
        assert!(e.contains("2047"), "{e}");
        // Just under the limit is fine, just over is not.
        let mut d = dep();
        let base = received_len(&d);
        d.kargs
            .push(format!("p={}", "y".repeat(MAX_CMDLINE - base - 3)));
        assert!(command_line(0, &d).is_ok());
        d.kargs.last_mut().unwrap().push('y');
        assert!(command_line(0, &d).is_err());
    }

    /// An image's arguments are refused exactly when the shortest deployment of it could not
    /// boot with them.
    #[test]
    fn image_kargs_fit_as_the_shortest_deployment() {
        let mut d = dep();
        d.stateroot = "s".into();
        d.kver = "k".into();
        d.kargs.clear();
        let base = received_len(&d);
        let fits = vec![format!("p={}", "y".repeat(MAX_CMDLINE - base - 3))];
        let over = vec![format!("p={}", "y".repeat(MAX_CMDLINE - base - 2))];
        assert!(check_image_kargs_fit(&fits).is_ok());
        d.kargs = fits;
        assert!(command_line(0, &d).is_ok());
        let e = format!("{:#}", check_image_kargs_fit(&over).unwrap_err());
        assert!(e.contains("2047"), "{e}");
        d.kargs = over;
        assert!(command_line(0, &d).is_err());
    }

    #[test]
    fn kernel_arguments_follow_one_rule() {
        for ok in [
            "rw",
            "root=UUID=1",
            "k=",
            r#""q=a b""#,
            r#""q=a  b""#,
            r"q=it\'s",
            r#"q=say\"hi\""#,
            r"q=C:\\dir\\",
            r#""q=p \"q\" r""#,
            "q=$x;#y`z`{}|&<>*?[]",
            "q=é日本€",
            r#""q=voilà x""#,
        ] {
            validate_karg(ok).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        for (bad, why) in [
            ("", "empty"),
            ("a\nb", "control"),
            ("a\tb", "control"),
            ("q=voilà", "0xA0"),
            (r#""q=voilà""#, "0xA0"),
            (r#"q=a"b"#, "odd number"),
            // Not canonical: the kernel reads it as q=a b, written "q=a b".
            (r#"q="a b""#, "kernel would read"),
            ("a b", "kernel would read"),
            (r#""q=a\" b\"""#, "ends the kernel's quoting"),
            ("--", "kernel would read"),
            (r"q=C:\dir", "backslash"),
            ("q=it's", "backslash before every"),
            (r"q=\\x41", "Fedora"),
        ] {
            let e = format!("{:#}", validate_karg(bad).unwrap_err());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let mut d = dep();
        d.kargs.push(r"q=C:\dir".into());
        assert!(to_entry(&d, 0, "t", 1).is_err());
    }

    #[test]
    fn input_is_checked_before_parsing() {
        check_input("x", r#"q="voilà x" r"#).unwrap();
        for (bad, why) in [
            ("a\nb", "newline"),
            ("a\0b", "NUL"),
            (r#"q="a"#, "unbalanced"),
            ("q=voilà", "0xA0"),
            ("q=\u{a0}", "0xA0"),
        ] {
            let e = format!("{:#}", check_input("x", bad).unwrap_err());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
