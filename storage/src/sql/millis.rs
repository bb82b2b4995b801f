//! Times are stored as milliseconds since the Unix epoch in both databases, so the same SQL
//! compares them the same way.

use chrono::{DateTime, Utc};

pub fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn from_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}
