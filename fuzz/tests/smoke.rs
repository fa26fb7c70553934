//! `make test`'s smoke pass over every fuzz target: seeds and a fixed set of mutations each,
//! a few seconds per target, with the memory one input may allocate capped.
//!
//! `STRATUM_FUZZ_SMOKE_RUNS` changes the number of mutations per target (default 20000);
//! each target stops after 3 seconds all the same.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use stratum_fuzz::{smoke, target};

/// Most memory one input may hold at once: far above what any parser needs for the inputs
/// of the smoke pass, far below what an unbounded allocation reaches.
const MAX_BYTES: usize = 256 << 20;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's live bytes and their peak.
struct Counting;

fn account(delta: isize) {
    // try_with: the thread's counters may already be gone while it exits.
    let _ = LIVE.try_with(|l| {
        l.set(l.get() + delta);
        let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are kept.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        account(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        account(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        account(l.size() as isize);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        account(new as isize - l.size() as isize);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs one input and fails when it held more than [`MAX_BYTES`] at once.
fn capped(input: &[u8], run: &mut dyn FnMut()) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    run();
    let used = PEAK.with(Cell::get) - base;
    assert!(
        used <= MAX_BYTES as isize,
        "one input held {used} bytes at once: {:?}",
        String::from_utf8_lossy(input)
    );
}

fn smoke(name: &str) {
    let t = target(name).expect("a target of that name");
    let runs = std::env::var("STRATUM_FUZZ_SMOKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // A fixed seed per target, so a failure repeats.
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let r = smoke::run(t, runs, Duration::from_secs(3), seed, &capped);
    eprintln!(
        "{name}: {} inputs in {:.2?} (slowest {:.2?})",
        r.inputs, r.elapsed, r.slowest
    );
}

macro_rules! smoke_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { smoke(stringify!($name)); })*
    };
}

smoke_tests!(
    cmdline, ostree, probe, mountinfo, bls, grubenv, origin, config, kargs, kargsd, control,
    triggers, cpio, archive, modules, modinfo,
);

/// Every target has a smoke test above.
#[test]
fn all_targets_are_smoked() {
    let listed = "cmdline ostree probe mountinfo bls grubenv origin config kargs kargsd control \
                  triggers cpio archive modules modinfo";
    for t in stratum_fuzz::TARGETS {
        assert!(listed.split(' ').any(|n| n == t.name), "{}", t.name);
    }
}
