//! When a schedule's runs are due: a fixed interval or a cron expression in a time zone,
//! and the conversions between the API's timestamps and the clock.

use std::time::Duration;

use ferry_proto::v1::schedule;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::cron::Cron;
use crate::error::{Result, SchedulerError};

/// What the API's cron field expects, for hints.
pub(crate) const CRON_HINT: &str = "write five fields: minute hour day-of-month month \
     day-of-week, for example \"0 2 * * *\" for 02:00 every day or \"*/30 * * * *\" for every \
     half hour";

/// A schedule's timing, ready to compute due times.
#[derive(Debug, Clone)]
pub(crate) enum Trigger {
    Interval(Duration),
    Cron { cron: Cron, tz: TimeZone },
}

impl Trigger {
    /// The trigger of a valid (stored) schedule.
    pub fn of(trigger: Option<&schedule::Trigger>, time_zone: &str) -> Result<Trigger> {
        match trigger {
            Some(schedule::Trigger::Interval(d)) => Ok(Trigger::Interval(interval(d)?)),
            Some(schedule::Trigger::Cron(expr)) => {
                let cron = Cron::parse(expr)
                    .map_err(|e| SchedulerError::invalid("cron", e.to_string(), CRON_HINT))?;
                Ok(Trigger::Cron {
                    cron,
                    tz: time_zone_of(time_zone)?,
                })
            }
            None => Err(SchedulerError::invalid(
                "trigger",
                "missing; give an interval or a cron expression",
                "set interval (for example 3600s) or cron (for example \"0 2 * * *\")",
            )),
        }
    }

    /// The first due time strictly after `t`; `None` if there is none (a cron
    /// expression naming a date that never comes).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Trigger::Interval(d) => t.checked_add(*d).ok(),
            Trigger::Cron { cron, tz } => cron.next_after(t, tz),
        }
    }

    /// The next due time after a run due at `due` fired at `now`: one missed while the
    /// service was down is not made up for more than once.
    pub fn next_from(&self, due: Timestamp, now: Timestamp) -> Option<Timestamp> {
        self.next_after(due)
            .filter(|next| *next > now)
            .or_else(|| self.next_after(now))
    }
}

/// An interval as the API gives it: whole, positive seconds.
pub(crate) fn interval(d: &prost_types::Duration) -> Result<Duration> {
    if d.seconds <= 0 || d.nanos != 0 {
        return Err(SchedulerError::invalid(
            "interval",
            format!(
                "{}s {}ns is not a positive number of whole seconds",
                d.seconds, d.nanos
            ),
            "give the interval in whole seconds, for example 3600s",
        ));
    }
    Ok(Duration::from_secs(d.seconds as u64))
}

/// An IANA time zone; empty means UTC.
pub(crate) fn time_zone_of(name: &str) -> Result<TimeZone> {
    if name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|e| {
        SchedulerError::invalid(
            "time_zone",
            format!("{name:?} is not a known time zone: {e}"),
            "use an IANA name such as \"Europe/Paris\" or \"America/New_York\", or leave it \
             empty for UTC",
        )
    })
}

/// A std duration from the API's, if it is one (non-negative).
pub(crate) fn std_duration(d: &prost_types::Duration) -> Option<Duration> {
    let nanos = u32::try_from(d.nanos).ok()?;
    let seconds = u64::try_from(d.seconds).ok()?;
    (nanos < 1_000_000_000).then(|| Duration::new(seconds, nanos))
}

pub(crate) use ferry_rpc::proto_duration;

pub(crate) fn to_proto(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

pub(crate) fn from_millis(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_missed_run_is_made_up_once_then_the_rhythm_goes_on() {
        let t = Trigger::Interval(Duration::from_secs(60));
        // On time: the next is one interval after the due time.
        assert_eq!(
            t.next_from(ts("2025-01-01T00:00:00Z"), ts("2025-01-01T00:00:01Z")),
            Some(ts("2025-01-01T00:01:00Z"))
        );
        // Down for an hour: one run now, the next one interval from now.
        assert_eq!(
            t.next_from(ts("2025-01-01T00:00:00Z"), ts("2025-01-01T01:00:30Z")),
            Some(ts("2025-01-01T01:01:30Z"))
        );
        let c = Trigger::of(Some(&schedule::Trigger::Cron("0 * * * *".into())), "").expect("cron");
        assert_eq!(
            c.next_from(ts("2025-01-01T00:00:00Z"), ts("2025-01-01T05:10:00Z")),
            Some(ts("2025-01-01T06:00:00Z"))
        );
    }

    #[test]
    fn bad_intervals_and_zones_say_what_to_give() {
        let e = interval(&prost_types::Duration {
            seconds: 1,
            nanos: 5,
        })
        .expect_err("fraction");
        assert!(e.to_string().contains("whole seconds"), "{e}");
        let e = time_zone_of("Mars/Olympus").expect_err("zone");
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        assert!(e.detail().hint.contains("Europe/Paris"));
        assert!(time_zone_of("Asia/Tokyo").is_ok());
    }
}
