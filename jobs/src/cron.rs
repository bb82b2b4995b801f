//! Cron expressions in a time zone: the classic five fields (`minute hour day month weekday`)
//! or six/seven with seconds (and years), evaluated in an IANA zone such as `Europe/Paris`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A parsed, valid schedule.
#[derive(Debug, Clone)]
pub struct CronSpec {
    schedule: cron::Schedule,
    timezone: Tz,
}

/// Which field is wrong and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CronError {
    pub field: &'static str,
    pub message: String,
}

impl CronSpec {
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, CronError> {
        let fields = expression.split_whitespace().count();
        let normalised = match fields {
            5 => format!("0 {expression}"),
            6 | 7 => expression.to_string(),
            _ => {
                return Err(CronError {
                    field: "cron",
                    message: format!("expected 5 fields (minute hour day month weekday), got {fields}"),
                });
            }
        };
        let schedule = cron::Schedule::from_str(&normalised)
            .map_err(|e| CronError { field: "cron", message: e.to_string() })?;
        let timezone = Tz::from_str(timezone).map_err(|_| CronError {
            field: "timezone",
            message: format!("{timezone:?} is not an IANA time zone such as UTC or Europe/Paris"),
        })?;
        Ok(Self { schedule, timezone })
    }

    /// The first tick strictly after `after`, or `None` if the schedule never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.schedule.after(&local).next().map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_field_expressions_tick_in_their_time_zone() {
        let spec = CronSpec::parse("0 3 * * *", "Europe/Paris").unwrap();
        let after = Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 0).unwrap();
        // 03:00 in Paris in summer is 01:00 UTC.
        assert_eq!(spec.next_after(after), Some(Utc.with_ymd_and_hms(2026, 7, 2, 1, 0, 0).unwrap()));
        let winter = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        assert_eq!(spec.next_after(winter), Some(Utc.with_ymd_and_hms(2026, 12, 2, 2, 0, 0).unwrap()));
    }

    #[test]
    fn seconds_field_and_strictly_after() {
        let spec = CronSpec::parse("*/10 * * * * *", "UTC").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap();
        assert_eq!(spec.next_after(at), Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 20).unwrap()));
    }

    #[test]
    fn bad_expressions_name_the_field() {
        assert_eq!(CronSpec::parse("* * *", "UTC").unwrap_err().field, "cron");
        assert_eq!(CronSpec::parse("61 * * * *", "UTC").unwrap_err().field, "cron");
        assert_eq!(CronSpec::parse("0 3 * * *", "Mars/Olympus").unwrap_err().field, "timezone");
    }
}
