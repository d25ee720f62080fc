//! Calendar arithmetic in Asia/Shanghai, where budgets reset and the rollup cuts its days.
//! China has kept UTC+8 all year since 1991 (no daylight saving), so a fixed offset is exact
//! for every date this app will meet and no time-zone database is needed.
//!
//! A [`Day`] is written `YYYY-MM-DD` and a [`Month`] `YYYY-MM`; both forms sort as text,
//! which is how the database compares them.

use std::fmt;
use std::str::FromStr;

/// UTC+8, in seconds.
pub const OFFSET_SECS: i64 = 8 * 3600;
const DAY_SECS: i64 = 86_400;

/// A calendar day in Shanghai (days since 1970-01-01 there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

/// A calendar month in Shanghai.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i64,
    /// 1..=12
    month: u32,
}

impl Day {
    /// The Shanghai day that contains the instant `unix_secs`.
    pub fn of(unix_secs: i64) -> Day {
        Day((unix_secs + OFFSET_SECS).div_euclid(DAY_SECS))
    }

    /// The Shanghai day of an instant in unix milliseconds.
    pub fn of_ms(unix_ms: i64) -> Day {
        Day::of(unix_ms.div_euclid(1000))
    }

    /// The day from its date; `None` for an impossible date.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Day(days_from_civil(year, month, day)))
    }

    /// Year, month (1..=12), day (1..=31).
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.0)
    }

    /// Midnight at the start of this day, as unix seconds.
    pub fn start(self) -> i64 {
        self.0 * DAY_SECS - OFFSET_SECS
    }

    /// Midnight at the start of this day, as unix milliseconds.
    pub fn start_ms(self) -> i64 {
        self.start() * 1000
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }

    /// `n` days later (earlier when negative).
    pub fn add_days(self, n: i64) -> Day {
        Day(self.0 + n)
    }

    pub fn month(self) -> Month {
        let (year, month, _) = self.ymd();
        Month { year, month }
    }
}

impl Month {
    /// The Shanghai month that contains the instant `unix_secs`.
    pub fn of(unix_secs: i64) -> Month {
        Day::of(unix_secs).month()
    }

    /// Year and month (1..=12).
    pub fn ym(self) -> (i64, u32) {
        (self.year, self.month)
    }

    pub fn first_day(self) -> Day {
        Day(days_from_civil(self.year, self.month, 1))
    }

    /// Midnight at the start of the month's first day, as unix seconds.
    pub fn start(self) -> i64 {
        self.first_day().start()
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }
}

/// The next Shanghai midnight after `unix_secs` (when a daily budget resets).
pub fn next_midnight(unix_secs: i64) -> i64 {
    Day::of(unix_secs).next().start()
}

/// The start of the next Shanghai month after `unix_secs` (when a monthly budget resets).
pub fn next_month_start(unix_secs: i64) -> i64 {
    Month::of(unix_secs).next().start()
}

/// `2026-11-27 00:00` for an instant, in Shanghai time (for messages and CSV).
pub fn format_minute(unix_secs: i64) -> String {
    let day = Day::of(unix_secs);
    let secs = unix_secs - day.start();
    format!("{day} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// `2026-11-26T23:59:59.123+08:00` for an instant in unix milliseconds.
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let day = Day::of_ms(unix_ms);
    let ms = unix_ms - day.start_ms();
    let secs = ms / 1000;
    format!(
        "{day}T{:02}:{:02}:{:02}.{:03}+08:00",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        ms % 1000
    )
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The error of parsing a [`Day`] or a [`Month`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a date of the form YYYY-MM-DD (or YYYY-MM for a month): {0:?}")]
pub struct BadDate(pub String);

fn number<T: FromStr>(text: &str, len: usize) -> Option<T> {
    (text.len() == len && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

impl FromStr for Day {
    type Err = BadDate;
    fn from_str(text: &str) -> Result<Day, BadDate> {
        let bad = || BadDate(text.to_string());
        let mut parts = text.split('-');
        let (Some(y), Some(m), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (Some(y), Some(m), Some(d)) = (number(y, 4), number(m, 2), number(d, 2)) else {
            return Err(bad());
        };
        Day::from_ymd(y, m, d).ok_or_else(bad)
    }
}

impl FromStr for Month {
    type Err = BadDate;
    fn from_str(text: &str) -> Result<Month, BadDate> {
        let bad = || BadDate(text.to_string());
        let (y, m) = text.split_once('-').ok_or_else(bad)?;
        match (number(y, 4), number::<u32>(m, 2)) {
            (Some(year), Some(month)) if (1..=12).contains(&month) => Ok(Month { year, month }),
            _ => Err(bad()),
        }
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's `days_from_civil` / `civil_from_days` (proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26 00:00:00 +08:00 = 2026-11-25 16:00:00 UTC.
    const NOV_26: i64 = 1_795_622_400;

    #[test]
    fn midnight_splits_days() {
        assert_eq!(Day::of(NOV_26 - 1).to_string(), "2026-11-25");
        assert_eq!(Day::of(NOV_26).to_string(), "2026-11-26");
        assert_eq!(Day::of(NOV_26).start(), NOV_26);
        assert_eq!(next_midnight(NOV_26 - 1), NOV_26);
        assert_eq!(next_midnight(NOV_26), NOV_26 + DAY_SECS);
        // 16:00 UTC is already the next day in Shanghai.
        assert_eq!(Day::of(NOV_26 - 8 * 3600 - 1).to_string(), "2026-11-25");
        assert_eq!(format_minute(NOV_26 - 60), "2026-11-25 23:59");
        assert_eq!(
            format_rfc3339_ms(NOV_26 * 1000 - 1),
            "2026-11-25T23:59:59.999+08:00"
        );
    }

    #[test]
    fn month_boundaries() {
        let dec_1 = "2026-12-01".parse::<Day>().unwrap().start();
        assert_eq!(Month::of(dec_1 - 1).to_string(), "2026-11");
        assert_eq!(Month::of(dec_1).to_string(), "2026-12");
        assert_eq!(next_month_start(dec_1 - 1), dec_1);
        let jan_1 = "2027-01-01".parse::<Day>().unwrap().start();
        assert_eq!(next_month_start(dec_1), jan_1);
        assert_eq!(Month::of(jan_1 - 1).next().to_string(), "2027-01");
        let feb_29 = "2028-02-29".parse::<Day>().unwrap();
        assert_eq!(feb_29.next().to_string(), "2028-03-01");
        assert_eq!(feb_29.month().first_day().to_string(), "2028-02-01");
    }

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        let mut day = "1969-12-30".parse::<Day>().unwrap();
        for _ in 0..(366 * 60) {
            let text = day.to_string();
            assert_eq!(text.parse::<Day>().unwrap(), day, "{text}");
            day = day.next();
        }
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-01x",
            "",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
        assert_eq!("2026-11".parse::<Month>().unwrap().to_string(), "2026-11");
        assert!("2026-00".parse::<Month>().is_err());
    }
}
