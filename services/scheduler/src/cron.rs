//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), as crontab(5)
//! reads them, and the next time one fires in an IANA time zone.
//!
//! Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma
//! list of those; months and days of the week also take their English names (`jan`,
//! `mon`), and day of week 7 is Sunday like 0. As in Vixie cron, when both day fields are
//! restricted a day matching either one fires. `@hourly`, `@daily` (`@midnight`),
//! `@weekly`, `@monthly` and `@yearly` (`@annually`) stand for their usual expressions.
//!
//! Daylight saving time: a wall-clock time that does not exist on a spring-forward day runs
//! just after the jump (02:30 becomes 03:30), and one that exists twice on a fall-back day
//! runs once, at its first occurrence; so a daily job runs exactly once each day, and a
//! `*/15 * * * *` job pauses through the repeated hour rather than running twice at the
//! same wall-clock time.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Why an expression does not parse; names the field and the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("want five fields (minute hour day-of-month month day-of-week), got {count}{extra}")]
    FieldCount { count: usize, extra: &'static str },
    #[error("field {position} ({name}) {text:?}: {reason}")]
    Field {
        position: usize,
        name: &'static str,
        text: String,
        reason: String,
    },
    #[error("unknown macro {0:?}; use @hourly, @daily, @weekly, @monthly or @yearly")]
    Macro(String),
}

/// One field's rules: its name as an error names it, and its range.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    FieldSpec {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    // 7 is Sunday too; folded onto 0 after parsing.
    FieldSpec {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day fields that start with `*`: crontab's rule for combining them.
    dom_star: bool,
    dow_star: bool,
}

/// Years searched ahead before an expression is declared never to fire (Feb 30).
const SEARCH_YEARS: i16 = 5;

impl Cron {
    /// Parses an expression; the error names the bad field and says what is wrong.
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let text = text.trim();
        let expanded = match text.strip_prefix('@') {
            Some(name) => match name.to_ascii_lowercase().as_str() {
                "hourly" => "0 * * * *",
                "daily" | "midnight" => "0 0 * * *",
                "weekly" => "0 0 * * 0",
                "monthly" => "0 0 1 * *",
                "yearly" | "annually" => "0 0 1 1 *",
                _ => return Err(CronError::Macro(text.to_owned())),
            },
            None => text,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            let extra = match fields.len() {
                6 => " (a seconds or year field is not supported)",
                _ => "",
            };
            return Err(CronError::FieldCount {
                count: fields.len(),
                extra,
            });
        }
        let mut bits = [0u64; 5];
        for (i, (spec, field)) in FIELDS.iter().zip(&fields).enumerate() {
            bits[i] = parse_field(spec, field).map_err(|reason| CronError::Field {
                position: i + 1,
                name: spec.name,
                text: (*field).to_owned(),
                reason,
            })?;
        }
        // Sunday is both 0 and 7.
        let weekdays = (bits[4] | (bits[4] >> 7)) & 0x7f;
        Ok(Cron {
            minutes: bits[0],
            hours: bits[1],
            days: bits[2],
            months: bits[3],
            weekdays,
            dom_star: fields[2].starts_with('*'),
            dow_star: fields[4].starts_with('*'),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` at which the expression fires in `tz`;
    /// `None` if it never does within five years (a date like February 30).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(after);
        let limit = local.year().saturating_add(SEARCH_YEARS);
        let mut date = local.date();
        let (mut hour, mut minute) = (local.hour() as u32, local.minute() as u32 + 1);
        loop {
            if date.year() > limit {
                return None;
            }
            if self.months & (1 << date.month()) == 0 {
                date = date.last_of_month().tomorrow().ok()?;
                (hour, minute) = (0, 0);
                continue;
            }
            if self.day_matches(date) {
                while hour < 24 {
                    match first_bit_from(self.minutes, minute) {
                        Some(m) if self.hours & (1 << hour) != 0 => {
                            let dt = date.at(hour as i8, m as i8, 0, 0);
                            if let Some(t) = self.resolve(dt, tz, after) {
                                return Some(t);
                            }
                            minute = m + 1;
                        }
                        _ => (hour, minute) = (hour + 1, 0),
                    }
                }
            }
            date = date.tomorrow().ok()?;
            (hour, minute) = (0, 0);
        }
    }

    /// The instant of a matching wall-clock time, if later than `after`. `compatible`
    /// is the module's daylight-saving rule: the later offset in a gap, the earlier in a
    /// fold (whose second pass is then earlier than `after` and skipped).
    fn resolve(&self, dt: DateTime, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        tz.to_ambiguous_timestamp(dt)
            .compatible()
            .ok()
            .filter(|t| *t > after)
    }
}

/// The lowest set bit at or above `from`.
fn first_bit_from(bits: u64, from: u32) -> Option<u32> {
    let rest = bits.checked_shr(from)? << from;
    (rest != 0).then(|| rest.trailing_zeros())
}

fn parse_field(spec: &FieldSpec, field: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in field.split(',') {
        if part.is_empty() {
            return Err("empty list item".into());
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step {step:?} is not a number"))?;
                if step == 0 || step > spec.max {
                    return Err(format!("step {step} must be between 1 and {}", spec.max));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(spec, a)?, value(spec, b)?);
            if a > b {
                return Err(format!("range {a}-{b} goes backwards"));
            }
            (a, b)
        } else {
            let a = value(spec, range)?;
            // `a/n` means from a to the end of the range, every n.
            (a, if step.is_some() { spec.max } else { a })
        };
        for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

fn value(spec: &FieldSpec, text: &str) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        // Month names count from 1, day names from 0 (Sunday).
        return Ok(i as u32 + spec.min);
    }
    let v: u32 = text.parse().map_err(|_| {
        let names = if spec.names.is_empty() {
            String::new()
        } else {
            format!(" or a name like {}", spec.names[0])
        };
        format!("{text:?} is not a number{names}")
    })?;
    if v < spec.min || v > spec.max {
        return Err(format!("{v} is out of range {}-{}", spec.min, spec.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next(expr: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).expect("zone");
        let cron = Cron::parse(expr).expect("parse");
        cron.next_after(ts(after), &tz).expect("fires").to_string()
    }

    #[test]
    fn errors_name_the_field_and_the_problem() {
        let err = |e: &str| Cron::parse(e).expect_err(e).to_string();
        assert_eq!(
            err("0 25 * * *"),
            "field 2 (hour) \"25\": 25 is out of range 0-23"
        );
        assert_eq!(
            err("* * * foo *"),
            "field 4 (month) \"foo\": \"foo\" is not a number or a name like jan"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "field 1 (minute) \"*/0\": step 0 must be between 1 and 59"
        );
        assert_eq!(
            err("0 0 10-2 * *"),
            "field 3 (day of month) \"10-2\": range 10-2 goes backwards"
        );
        assert!(err("0 0 * * * *").contains("seconds or year"));
        assert!(err("0 0 *").contains("got 3"));
        assert!(err("@sometimes").contains("@hourly"));
        assert!(err("1,,2 * * * *").contains("field 1 (minute)"));
    }

    #[test]
    fn next_times() {
        let cases = [
            (
                "*/15 * * * *",
                "2025-01-01T10:07:00Z",
                "UTC",
                "2025-01-01T10:15:00Z",
            ),
            (
                "0 2 * * *",
                "2025-01-01T02:00:00Z",
                "UTC",
                "2025-01-02T02:00:00Z",
            ),
            (
                "30 9 * jan-mar mon-fri",
                "2025-03-28T10:00:00Z",
                "UTC",
                "2025-03-31T09:30:00Z",
            ),
            // Sunday as 7; 2025-01-05 is a Sunday.
            (
                "0 0 * * 7",
                "2025-01-01T00:00:00Z",
                "UTC",
                "2025-01-05T00:00:00Z",
            ),
            (
                "@monthly",
                "2025-01-15T00:00:00Z",
                "UTC",
                "2025-02-01T00:00:00Z",
            ),
            // Both day fields restricted: either fires (the 13th, or a Friday).
            (
                "0 0 13 * 5",
                "2025-01-01T00:00:00Z",
                "UTC",
                "2025-01-03T00:00:00Z",
            ),
            // 10/20 in minutes: 10, 30, 50.
            (
                "10/20 * * * *",
                "2025-01-01T00:31:00Z",
                "UTC",
                "2025-01-01T00:50:00Z",
            ),
            (
                "0 0 29 2 *",
                "2025-01-01T00:00:00Z",
                "UTC",
                "2028-02-29T00:00:00Z",
            ),
            // 02:00 in Paris is 01:00 UTC in winter.
            (
                "0 2 * * *",
                "2025-01-01T00:00:00Z",
                "Europe/Paris",
                "2025-01-01T01:00:00Z",
            ),
            // 2025-03-30 02:30 does not exist in Paris: it runs at 03:30 CEST.
            (
                "30 2 * * *",
                "2025-03-30T00:00:00Z",
                "Europe/Paris",
                "2025-03-30T01:30:00Z",
            ),
            // 2025-10-26 02:30 happens twice in Paris: it runs at the first only.
            (
                "30 2 * * *",
                "2025-10-26T00:00:00Z",
                "Europe/Paris",
                "2025-10-26T00:30:00Z",
            ),
            (
                "30 2 * * *",
                "2025-10-26T00:30:00Z",
                "Europe/Paris",
                "2025-10-27T01:30:00Z",
            ),
            // Hourly: 02:30 CEST, then 03:30 CET (02:30 CET is not run a second time).
            (
                "30 * * * *",
                "2025-10-26T00:30:00Z",
                "Europe/Paris",
                "2025-10-26T02:30:00Z",
            ),
        ];
        for (expr, after, tz, want) in cases {
            assert_eq!(
                next(expr, after, tz),
                want,
                "{expr:?} after {after} in {tz}"
            );
        }
        let never = Cron::parse("0 0 30 2 *").expect("parse");
        assert!(
            never
                .next_after(ts("2025-01-01T00:00:00Z"), &TimeZone::UTC)
                .is_none()
        );
    }
}
