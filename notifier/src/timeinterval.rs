//! Alertmanager's `time_intervals`: times of day, weekdays, days of the month, months and
//! years, in a time zone (`location`, from the system's tz database; UTC by default).
//! Every field given must match; an empty field matches everything.

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde::Deserialize;

/// One entry of a named interval's `time_intervals`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeInterval {
    /// Ranges of the day, `HH:MM` to `HH:MM` (end exclusive).
    #[serde(default)]
    pub times: Vec<TimeRange>,
    /// `monday`, or ranges like `monday:friday`.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// `1`, `1:5`, negatives count from the month's end (`-1` is the last day).
    #[serde(default)]
    pub days_of_month: Vec<String>,
    /// `january`, `1`, `january:march`.
    #[serde(default)]
    pub months: Vec<String>,
    /// `2026`, `2026:2027`.
    #[serde(default)]
    pub years: Vec<String>,
    /// Time zone name such as `Europe/Berlin` (or `Local`); UTC when absent.
    pub location: Option<String>,
}

/// `start_time` to `end_time`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    /// `HH:MM`.
    pub start_time: String,
    /// `HH:MM`, up to `24:00`.
    pub end_time: String,
}

fn minutes(s: &str) -> Result<i32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let (h, m): (i32, i32) = (
        h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?,
        m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?,
    );
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || (h == 24 && m != 0) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

fn weekday(s: &str) -> Result<i32, String> {
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(s.trim()))
        .map(|i| i as i32)
        .ok_or_else(|| format!("{s:?} is not a weekday"))
}

fn month(s: &str) -> Result<i32, String> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=12).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{s:?} is not a month"))
        };
    }
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .map(|i| i as i32 + 1)
        .ok_or_else(|| format!("{s:?} is not a month"))
}

fn number(s: &str) -> Result<i32, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))
}

/// `a` or `a:b`, each end read by `one`.
fn range(s: &str, one: fn(&str) -> Result<i32, String>) -> Result<(i32, i32), String> {
    match s.split_once(':') {
        Some((a, b)) => Ok((one(a)?, one(b)?)),
        None => {
            let v = one(s)?;
            Ok((v, v))
        }
    }
}

impl TimeInterval {
    /// Checks every field, so that a bad one is a load error.
    ///
    /// # Errors
    /// What is wrong, quoting it.
    pub fn check(&self) -> Result<(), String> {
        for t in &self.times {
            if minutes(&t.start_time)? >= minutes(&t.end_time)? {
                return Err(format!(
                    "times: {} is not before {}",
                    t.start_time, t.end_time
                ));
            }
        }
        for w in &self.weekdays {
            range(w, weekday)?;
        }
        for d in &self.days_of_month {
            let (a, b) = range(d, number)?;
            if a == 0 || b == 0 || !(-31..=31).contains(&a) || !(-31..=31).contains(&b) {
                return Err(format!("days_of_month: {d:?} is out of range"));
            }
        }
        for m in &self.months {
            range(m, month)?;
        }
        for y in &self.years {
            range(y, number)?;
        }
        self.zone()?;
        Ok(())
    }

    fn zone(&self) -> Result<TimeZone, String> {
        match self.location.as_deref() {
            None | Some("UTC") => Ok(TimeZone::UTC),
            Some("Local") => Ok(TimeZone::system()),
            Some(name) => TimeZone::get(name).map_err(|e| format!("location: {name:?}: {e}")),
        }
    }

    /// Whether `at_ms` (Unix milliseconds) falls in this interval.
    pub fn contains(&self, at_ms: i64) -> bool {
        let (Ok(ts), Ok(tz)) = (Timestamp::from_millisecond(at_ms), self.zone()) else {
            return false;
        };
        let dt = ts.to_zoned(tz).datetime();
        let minute = i32::from(dt.hour()) * 60 + i32::from(dt.minute());
        let times = self.times.is_empty()
            || self.times.iter().any(|t| {
                matches!((minutes(&t.start_time), minutes(&t.end_time)),
                    (Ok(a), Ok(b)) if a <= minute && minute < b)
            });
        let wd = match dt.weekday() {
            Weekday::Sunday => 0,
            w => i32::from(w.to_monday_one_offset()),
        };
        let weekdays = self.weekdays.is_empty()
            || self
                .weekdays
                .iter()
                .any(|w| matches!(range(w, weekday), Ok((a, b)) if a <= wd && wd <= b));
        let day = i32::from(dt.day());
        let len = i32::from(dt.date().days_in_month());
        let days = self.days_of_month.is_empty()
            || self.days_of_month.iter().any(|d| {
                let Ok((a, b)) = range(d, number) else {
                    return false;
                };
                let abs = |v: i32| if v < 0 { len + 1 + v } else { v };
                abs(a) <= day && day <= abs(b)
            });
        let m = i32::from(dt.month());
        let months = self.months.is_empty()
            || self
                .months
                .iter()
                .any(|r| matches!(range(r, month), Ok((a, b)) if a <= m && m <= b));
        let y = i32::from(dt.year());
        let years = self.years.is_empty()
            || self
                .years
                .iter()
                .any(|r| matches!(range(r, number), Ok((a, b)) if a <= y && y <= b));
        times && weekdays && days && months && years
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn business_hours_in_a_time_zone() {
        let i = TimeInterval {
            times: vec![TimeRange {
                start_time: "09:00".into(),
                end_time: "17:00".into(),
            }],
            weekdays: vec!["monday:friday".into()],
            location: Some("Europe/Berlin".into()),
            ..Default::default()
        };
        i.check().unwrap();
        // Monday 2026-11-23, 08:30 UTC is 09:30 in Berlin.
        assert!(i.contains(ms("2026-11-23T08:30:00Z")));
        assert!(!i.contains(ms("2026-11-23T07:30:00Z")));
        // Saturday.
        assert!(!i.contains(ms("2026-11-28T10:00:00Z")));
    }

    #[test]
    fn last_day_of_the_month_and_bad_fields() {
        let i = TimeInterval {
            days_of_month: vec!["-1".into()],
            months: vec!["february".into()],
            ..Default::default()
        };
        assert!(i.contains(ms("2028-02-29T12:00:00Z")));
        assert!(!i.contains(ms("2028-02-28T12:00:00Z")));
        let bad = TimeInterval {
            weekdays: vec!["funday".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().contains("funday"));
    }
}
