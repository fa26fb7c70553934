//! systemd-boot's boot counting, as the Boot Loader Specification's "Automatic Boot
//! Assessment" puts it in entry file names: `NAME+LEFT[-DONE].conf`.
//!
//! - `+LEFT` alone: a new entry on trial with LEFT tries (Stratum writes `+N`, N being
//!   `boot-tries`);
//! - `+LEFT-DONE`: systemd-boot renames the file before each try, one from LEFT to DONE;
//! - `+0-DONE`: every try failed; systemd-boot sorts the entry after all others, so the
//!   previous default boots;
//! - no counter: a blessed entry (or one never counted); blessing is the rename that drops
//!   the counter, as `systemd-bless-boot` does.
//!
//! A `+` that is not followed by such a counter belongs to the name.

use std::fmt;

/// The tries of an entry on trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// Tries left.
    pub left: u32,
    /// Tries made; absent until the first one.
    pub done: Option<u32>,
}

/// An entry's file name, split into its name and counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryName {
    /// The name without counter and without `.conf`; the entry's id for systemd-boot.
    pub name: String,
    pub counter: Option<Counter>,
}

/// The file-name extension of type #1 entries.
const CONF: &str = ".conf";

impl EntryName {
    /// A new entry on trial with `tries` tries, or a plain one when `tries` is 0 (counting
    /// off).
    pub fn new(name: &str, tries: u32) -> EntryName {
        EntryName {
            name: name.to_string(),
            counter: (tries > 0).then_some(Counter {
                left: tries,
                done: None,
            }),
        }
    }

    /// Splits `file_name`; `None` when it is not a type #1 entry (`*.conf`) or its name is
    /// empty.
    pub fn parse(file_name: &str) -> Option<EntryName> {
        let stem = file_name.strip_suffix(CONF)?;
        let (name, counter) = match stem.rsplit_once('+') {
            Some((name, tail)) => match parse_counter(tail) {
                Some(c) => (name, Some(c)),
                None => (stem, None),
            },
            None => (stem, None),
        };
        if name.is_empty() {
            return None;
        }
        Some(EntryName {
            name: name.to_string(),
            counter,
        })
    }

    /// The name blessed: the counter dropped.
    pub fn blessed(&self) -> EntryName {
        EntryName {
            name: self.name.clone(),
            counter: None,
        }
    }

    /// Still on trial: a counter with tries left.
    pub fn on_trial(&self) -> bool {
        self.counter.is_some_and(|c| c.left > 0)
    }

    /// Every try failed: systemd-boot boots it no more unless chosen by hand.
    pub fn is_bad(&self) -> bool {
        self.counter.is_some_and(|c| c.left == 0)
    }
}

impl fmt::Display for EntryName {
    /// The file name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        match self.counter {
            Some(Counter { left, done: None }) => write!(f, "+{left}")?,
            Some(Counter {
                left,
                done: Some(done),
            }) => write!(f, "+{left}-{done}")?,
            None => {}
        }
        f.write_str(CONF)
    }
}

/// `LEFT` or `LEFT-DONE`, decimal digits only.
fn parse_counter(s: &str) -> Option<Counter> {
    let number = |t: &str| -> Option<u32> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    match s.split_once('-') {
        Some((left, done)) => Some(Counter {
            left: number(left)?,
            done: Some(number(done)?),
        }),
        None => Some(Counter {
            left: number(s)?,
            done: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(left: u32, done: Option<u32>) -> Option<Counter> {
        Some(Counter { left, done })
    }

    #[test]
    fn counters_in_file_names() {
        for (file, name, c) in [
            ("stratum-1.conf", "stratum-1", None),
            ("stratum-1+3.conf", "stratum-1", counter(3, None)),
            ("stratum-1+2-1.conf", "stratum-1", counter(2, Some(1))),
            ("stratum-1+0-3.conf", "stratum-1", counter(0, Some(3))),
            // Not counters: the `+` is part of the name.
            ("a+b.conf", "a+b", None),
            ("a+3-.conf", "a+3-", None),
            ("a+-1.conf", "a+-1", None),
            ("a+3-1-2.conf", "a+3-1-2", None),
            ("a+.conf", "a+", None),
            ("a+1+2.conf", "a+1", counter(2, None)),
        ] {
            let e = EntryName::parse(file).unwrap_or_else(|| panic!("{file}"));
            assert_eq!((e.name.as_str(), e.counter), (name, c), "{file}");
            assert_eq!(e.to_string(), file, "round trip of {file}");
        }
        for not_entry in ["stratum-1", "x.conf.bak", ".conf", "+3.conf"] {
            assert_eq!(EntryName::parse(not_entry), None, "{not_entry}");
        }
        // Too large to be a counter: part of the name.
        let big = "a+99999999999.conf";
        assert_eq!(EntryName::parse(big).unwrap().counter, None);
    }

    #[test]
    fn trial_states() {
        let new = EntryName::new("stratum-2", 3);
        assert_eq!(new.to_string(), "stratum-2+3.conf");
        assert!(new.on_trial() && !new.is_bad());
        let tried = EntryName::parse("stratum-2+1-2.conf").unwrap();
        assert!(tried.on_trial());
        let bad = EntryName::parse("stratum-2+0-3.conf").unwrap();
        assert!(bad.is_bad() && !bad.on_trial());
        assert_eq!(bad.blessed().to_string(), "stratum-2.conf");
        assert_eq!(tried.blessed(), EntryName::new("stratum-2", 0));
        let off = EntryName::new("stratum-2", 0);
        assert_eq!(off.to_string(), "stratum-2.conf");
        assert!(!off.on_trial() && !off.is_bad());
    }
}
