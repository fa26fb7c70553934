//! Reboot windows for automatic updates: days of the week, a start time and a length, in UTC
//! (as Zincati's `periodic` strategy). A machine whose policy is `apply` reboots into a staged
//! update only while one of its windows is open.
//!
//! Times are UTC so that a fleet spread over time zones and a machine without a configured
//! zone agree on what a window means; a window may run past midnight and past Sunday.

use serde::{Deserialize, Serialize};

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

/// A day of the week; `Mon` or `Monday` in the configuration, any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Weekday(u8);

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

impl TryFrom<String> for Weekday {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let l = s.to_ascii_lowercase();
        DAYS.iter()
            .position(|d| {
                let d = d.to_ascii_lowercase();
                l == d || l == d[..3]
            })
            .map(|i| Weekday(i as u8))
            .ok_or_else(|| format!("{s:?} is not a day of the week (Mon … Sun)"))
    }
}

impl From<Weekday> for String {
    fn from(d: Weekday) -> String {
        DAYS[usize::from(d.0)][..3].to_string()
    }
}

/// A time of day, `HH:MM` (24-hour clock, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay(u32);

impl TryFrom<String> for TimeOfDay {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day: write HH:MM (24-hour clock, UTC)");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        let digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || !digits(m) {
            return Err(bad());
        }
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay(h * 60 + m))
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> String {
        format!("{:02}:{:02}", t.0 / 60, t.0 % 60)
    }
}

/// One reboot window: it opens on each of `days` at `start_time` and stays open
/// `length_minutes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RebootWindow {
    pub days: Vec<Weekday>,
    pub start_time: TimeOfDay,
    pub length_minutes: u32,
}

impl RebootWindow {
    /// Why this window cannot be used, if so.
    pub fn check(&self) -> Result<(), String> {
        if self.days.is_empty() {
            return Err("a reboot window needs at least one day".into());
        }
        if self.length_minutes == 0 || self.length_minutes > MINUTES_PER_WEEK {
            return Err(format!(
                "length-minutes = {}: a window lasts from 1 to {MINUTES_PER_WEEK} minutes",
                self.length_minutes
            ));
        }
        Ok(())
    }

    /// The window's openings, as minutes since Monday 00:00.
    fn starts(&self) -> impl Iterator<Item = u32> + '_ {
        self.days
            .iter()
            .map(|d| u32::from(d.0) * MINUTES_PER_DAY + self.start_time.0)
    }
}

/// Minutes since Monday 00:00 UTC of the Unix time `now` (1970-01-01 was a Thursday).
fn minute_of_week(now: u64) -> u32 {
    let minutes = now / 60;
    ((minutes + 3 * u64::from(MINUTES_PER_DAY)) % u64::from(MINUTES_PER_WEEK)) as u32
}

/// Whether a reboot may happen at `now`: always when no window is configured, otherwise
/// while one of `windows` is open.
pub fn is_open(windows: &[RebootWindow], now: u64) -> bool {
    let m = minute_of_week(now);
    windows.is_empty()
        || windows.iter().any(|w| {
            w.starts()
                .any(|s| (m + MINUTES_PER_WEEK - s) % MINUTES_PER_WEEK < w.length_minutes)
        })
}

/// When the next window opens after `now` (Unix time, to the minute); `None` without windows.
pub fn next_opening(windows: &[RebootWindow], now: u64) -> Option<u64> {
    let m = minute_of_week(now);
    let wait = windows
        .iter()
        .flat_map(|w| w.starts())
        .map(|s| (s + MINUTES_PER_WEEK - m) % MINUTES_PER_WEEK)
        .min()?;
    Some((now / 60 + u64::from(wait)) * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[&str], start: &str, len: u32) -> RebootWindow {
        RebootWindow {
            days: days
                .iter()
                .map(|d| Weekday::try_from(d.to_string()).unwrap())
                .collect(),
            start_time: TimeOfDay::try_from(start.to_string()).unwrap(),
            length_minutes: len,
        }
    }

    // 2026-12-05 is a Saturday.
    const SAT_0000: u64 = 1_796_428_800;

    #[test]
    fn the_epoch_fixture_is_a_saturday() {
        assert_eq!(minute_of_week(SAT_0000), 5 * MINUTES_PER_DAY);
        assert_eq!(minute_of_week(0), 3 * MINUTES_PER_DAY);
    }

    #[test]
    fn windows_open_and_close() {
        let w = vec![window(&["Sat", "sunday"], "23:30", 60)];
        // Saturday 23:29 closed, 23:30 open, Sunday 00:29 open, 00:30 closed.
        let sat = SAT_0000;
        assert!(!is_open(&w, sat + (23 * 60 + 29) * 60));
        assert!(is_open(&w, sat + (23 * 60 + 30) * 60));
        assert!(is_open(&w, sat + (24 * 60 + 29) * 60));
        assert!(!is_open(&w, sat + (24 * 60 + 30) * 60));
        // Sunday 23:30 runs into Monday across the week's end.
        assert!(is_open(&w, sat + (2 * 24 * 60 + 10) * 60));
        assert!(!is_open(&w, sat + (2 * 24 * 60 + 31) * 60));
        // No window: always open.
        assert!(is_open(&[], sat));
    }

    #[test]
    fn next_opening_is_the_nearest() {
        let w = vec![window(&["Mon"], "02:00", 30), window(&["Sat"], "22:00", 30)];
        assert_eq!(next_opening(&w, SAT_0000), Some(SAT_0000 + 22 * 3600));
        // After Saturday's opening, Monday's comes next.
        let after = SAT_0000 + 23 * 3600;
        assert_eq!(next_opening(&w, after), Some(SAT_0000 + (48 + 2) * 3600));
        assert_eq!(next_opening(&[], after), None);
    }

    #[test]
    fn bad_values_say_what_to_write() {
        assert!(TimeOfDay::try_from("24:00".to_string()).is_err());
        assert!(TimeOfDay::try_from("3:00".to_string())
            .unwrap_err()
            .contains("HH:MM"));
        assert!(Weekday::try_from("Caturday".to_string()).is_err());
        assert!(window(&[], "01:00", 10).check().is_err());
        assert!(window(&["Mon"], "01:00", 0).check().is_err());
        assert!(window(&["Mon"], "01:00", 10_081).check().is_err());
        assert_eq!(String::from(window(&["monday"], "07:05", 1).days[0]), "Mon");
        assert_eq!(
            String::from(TimeOfDay::try_from("07:05".to_string()).unwrap()),
            "07:05"
        );
    }
}
