//! The coverage-guided driver: libFuzzer over the target named by `STRATUM_FUZZ_TARGET`.
//! `make fuzz` builds it with sanitizer-coverage instrumentation and runs it (fuzz/run.sh); any libFuzzer
//! flag works (`-runs=N`, `-max_total_time=S`, `-timeout=S`, `-rss_limit_mb=M`).
//!
//! With `STRATUM_FUZZ_SEEDS=DIR` the target's seeds made in code are written to `DIR` first,
//! so that libFuzzer reads them with the rest of the corpus. `STRATUM_FUZZ_LIST=1` prints each
//! target's name and longest input, one per line, and exits.

#![no_main]

use stratum_fuzz::{seeds, target, Target, TARGETS};

fn chosen() -> &'static Target {
    let name = std::env::var("STRATUM_FUZZ_TARGET").unwrap_or_default();
    target(&name).unwrap_or_else(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "STRATUM_FUZZ_TARGET={name:?}: not one of {}",
            names.join(", ")
        );
        std::process::exit(2)
    })
}

fn write_seeds(t: &Target) {
    let Some(dir) = std::env::var_os("STRATUM_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        seeds::generated(t.name)
            .iter()
            .enumerate()
            .try_for_each(|(i, s)| std::fs::write(dir.join(format!("generated-{i}")), s))
    });
    if let Err(e) = written {
        eprintln!("writing seeds to {}: {e}", dir.display());
        std::process::exit(2)
    }
}

fn list() {
    if std::env::var_os("STRATUM_FUZZ_LIST").is_some() {
        for t in TARGETS {
            println!("{} {}", t.name, t.max_len);
        }
        std::process::exit(0)
    }
}

libfuzzer_sys::fuzz_target!(
    init: {
        list();
        write_seeds(chosen());
    },
    |data: &[u8]| (chosen().run)(data)
);
