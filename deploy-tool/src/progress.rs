//! Progress of the long phases (pulls, checkouts, disk images, initramfs builds, package
//! downloads), for people, on stderr only: stdout carries results (`--json`) and nothing else.
//!
//! How a phase shows depends on where stderr goes, decided once per process ([`mode`]):
//! - a terminal (and `TERM` is not `dumb`): a live bar or spinner drawn by `indicatif`, with
//!   counts, rate and ETA where the phase knows them; when the phase ends the bar is cleared
//!   and its summary line is left in its place;
//! - anything else (a pipe, a file, the journal): exactly one plain line per phase, when it
//!   ends: `LABEL: SUMMARY in 1.23 s`, or `LABEL: failed after 1.23 s`. No escape codes, no
//!   carriage returns, so logs and scripts read it line by line;
//! - off: nothing at all, for the internal commands systemd units run ([`set_mode`]).
//!
//! The summary line is the same in both visible modes, so what a test or a script reads from
//! stderr does not depend on whether a person watched.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How phases show (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bars and spinners on stderr, a terminal.
    Bar,
    /// One plain line per phase on stderr.
    Lines,
    /// Nothing.
    Off,
}

/// The process's mode: 0 until decided, then a [`Mode`] + 1.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Sets the mode for the rest of the process (before any phase starts).
pub fn set_mode(m: Mode) {
    MODE.store(m as u8 + 1, Ordering::Relaxed);
}

/// The mode: as set, else [`Mode::Bar`] when stderr is a terminal that can draw one, else
/// [`Mode::Lines`].
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Bar,
        2 => Mode::Lines,
        3 => Mode::Off,
        _ => {
            let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
            let m = if std::io::stderr().is_terminal() && !dumb {
                Mode::Bar
            } else {
                Mode::Lines
            };
            set_mode(m);
            m
        }
    }
}

/// What a phase counts, which decides what its bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Nothing known but time: a spinner with the time elapsed.
    Time,
    /// Objects (of a pull) out of a total that grows as it is learnt; bytes in the message.
    Objects,
    /// Bytes out of a known total: rate and ETA.
    Bytes,
    /// Percent of the work, as the tool doing it reports it.
    Percent,
}

impl Unit {
    fn template(self) -> &'static str {
        match self {
            Unit::Time => "{spinner} {prefix} {elapsed} {msg}",
            Unit::Objects => {
                "{spinner} {prefix} [{bar:30}] {pos}/{len} objects, {per_sec}, ETA {eta} {msg}"
            }
            Unit::Bytes => {
                "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes}, {binary_bytes_per_sec}, \
                 ETA {eta} {msg}"
            }
            Unit::Percent => "{spinner} {prefix} [{bar:30}] {pos}%, ETA {eta} {msg}",
        }
    }
}

/// A handle to a phase's bar that callbacks can keep (cheap to clone; does nothing unless a
/// bar is drawn).
#[derive(Debug, Clone, Default)]
pub struct Meter(Option<ProgressBar>);

impl Meter {
    /// How much there is to do, in the phase's unit.
    pub fn set_total(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_length(n);
        }
    }

    /// How much is done, in the phase's unit.
    pub fn set_done(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_position(n);
        }
    }

    /// Adds `n` to what is done.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Text shown after the counts (e.g. what is being worked on).
    pub fn set_message(&self, m: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.set_message(m.into());
        }
    }
}

/// One phase of a command. Ends with [`Phase::finish`]; dropped unfinished (an error on the
/// way), it reports the failure.
#[derive(Debug)]
pub struct Phase {
    label: String,
    meter: Meter,
    start: Instant,
    ended: bool,
}

impl Phase {
    /// Starts a phase named `label` (e.g. `Pulling os/x from updates`) counting `unit`.
    pub fn start(label: impl Into<String>, unit: Unit) -> Phase {
        let label = label.into();
        let bar = (mode() == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            // The templates are constants: one that did not parse would be a bug caught by
            // the tests, and the default style still shows the phase.
            if let Ok(style) = ProgressStyle::with_template(unit.template()) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar.tick();
            bar
        });
        Phase {
            label,
            meter: Meter(bar),
            start: Instant::now(),
            ended: false,
        }
    }

    /// The phase's bar, for updates.
    pub fn meter(&self) -> Meter {
        self.meter.clone()
    }

    /// The time since the phase started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Ends the phase with `summary` (what was done, e.g. `1234 objects, 56 MiB`).
    pub fn finish(mut self, summary: &str) {
        self.end(&format!("{summary} in"));
    }

    fn end(&mut self, what: &str) {
        self.ended = true;
        if let Some(b) = &self.meter.0 {
            b.finish_and_clear();
        }
        if mode() != Mode::Off {
            eprintln!(
                "{}: {what} {:.2} s",
                self.label,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if !self.ended {
            self.end("failed after");
        }
    }
}

/// A warning for people on stderr, `warning: MESSAGE`, between phases (no bar is drawn then);
/// printed in every mode, `Off` included: what it says matters to whoever reads the log.
pub fn warn(message: &str) {
    eprintln!("warning: {message}");
}

/// `n` bytes for people (`56.2 MiB`).
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for u in [Unit::Time, Unit::Objects, Unit::Bytes, Unit::Percent] {
            ProgressStyle::with_template(u.template()).unwrap();
        }
    }

    #[test]
    fn human_bytes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.00 MiB");
    }
}
