//! `make demo`: composes a Debian image, installs it to a disk image, boots it in QEMU and
//! shows, from inside the booted guest, what Stratum set up.

use anyhow::{ensure, Result};
use stratum_vmtests::{secs, Project, TestDisk};

const DEMO: &str = r#"
show() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
boot_1() {
    show "Inside the booted guest: stratum status"
    stratum status -v
    show "findmnt / /usr /etc /var /sysroot /boot"
    findmnt -o TARGET,SOURCE,FSTYPE,OPTIONS / /usr /sysroot /boot /var
    show "/etc is part of the deployment (writable), /usr is the image (read-only)"
    touch /usr/try-to-write || true
    echo "hello from the guest" > /etc/motd && echo "/etc/motd written"
    show "Kernel command line"
    cat /proc/cmdline
    show "What stratum-prepare-root decided (/run/stratum/boot.json)"
    grep -E '"(deployment|root_device|fstype|modules|wait_root|mount|total|since_kernel_start_ms)"' /run/stratum/boot.json
    show "Failed systemd units (none expected)"
    systemctl --failed --no-legend --plain
    result ok yes
}
"#;

/// The console lines a person watching the demo cares about.
fn console_highlights(line: &str) -> Option<String> {
    let line = line.trim_end();
    if let Some((_, text)) = line
        .split_once("run-scenario[")
        .and_then(|(_, r)| r.split_once("]: "))
    {
        return (!text.starts_with("STRATUM-TEST")).then(|| format!("  {text}"));
    }
    let text = line
        .split_once("] ")
        .filter(|_| line.starts_with('['))
        .map_or(line, |(_, t)| t);
    let keep = [
        "Booting `",
        "stratum-prepare-root:",
        "Welcome to",
        "Reached target",
        "reboot: Power down",
    ];
    keep.iter()
        .any(|k| {
            text.contains(k) && (!text.contains("Reached target") || text.contains("multi-user"))
        })
        .then(|| format!("console: {}", strip_ansi(text)))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn main() -> Result<()> {
    let t = std::time::Instant::now();
    let p = Project::locate()?.on("vm-trixie");
    eprintln!("Stratum demo: compose a Debian 13 (trixie) image, install it to a GPT disk image,");
    eprintln!("boot it with Secure Boot on UEFI (OVMF) in QEMU (TCG), and look around inside.\n");
    let img = p.build_image("demo", "1.0")?;
    let dir = img.dir.clone();
    let mut test = TestDisk::create(&dir, DEMO, &[])?;
    test.firmware = Some(img.firmware());
    let mut q = img.machine(dir.join("console.log"));
    q.disks = vec![img.disk.clone(), test.image.clone()];
    q.echo_filter = Some(console_highlights);
    eprintln!(
        "\nBooting {} in QEMU: UEFI firmware with Secure Boot → shim → GRUB → kernel → stratum-prepare-root → systemd.",
        img.disk.display()
    );
    eprintln!(
        "Highlights of the serial console follow (full log: {}).\n",
        q.console.display()
    );
    let out = q.run()?;
    ensure!(
        !out.timed_out,
        "the VM did not finish; console log: {}",
        q.console.display()
    );
    let r = test.results(&dir.join("results"))?;
    ensure!(
        r.get(1, "ok") == "yes",
        "the demo scenario did not complete; console log: {}",
        q.console.display()
    );
    eprintln!(
        "\nDemo complete in {:.0} s (boot and look-around: {:.0} s). Console log: {}",
        secs(t),
        out.elapsed.as_secs_f64(),
        q.console.display()
    );
    Ok(())
}
