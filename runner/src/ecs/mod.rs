//! The ECS model: task definitions, their validation, placement, metering and the task and
//! service descriptions, as pure logic with no I/O.
//!
//! Amazon ECS's field names and semantics are the contract. Every type here serializes with
//! ECS's own camelCase names and enum spellings, so that the control plane can store these
//! values as they are and `--json` output reads like the ECS API's:
//!
//! - [`taskdef`]: the `RegisterTaskDefinition` input ([`taskdef::RegisterTaskDefinition`], which
//!   refuses unknown fields, as ECS does) and the registered [`taskdef::TaskDefinition`], with its
//!   ARN, revision, status and the defaults ECS fills in; task-level `cpu` and `memory` are parsed
//!   in every form ECS accepts (`"256"`, `"0.25 vCPU"`, `"1 GB"`, `"1GB"`).
//! - [`validate`]: the checks `RegisterTaskDefinition` makes, each failing with ECS's own
//!   `ClientException` message where ECS's text is known ([`validate::ValidationError`]).
//! - [`fargate`]: the published Fargate task sizes, the nearest valid size for a request, and the
//!   cgroup limits a size gives.
//! - [`placement`]: EC2 container instances and the placement of tasks on them: filtering by
//!   status, agent, attributes, CPU, memory, ports and constraints (`distinctInstance`,
//!   `memberOf`), then the strategies in order (`binpack`, `spread`, `random`), with ECS's
//!   `failures[].reason` strings when nothing fits.
//! - [`query`]: the cluster query language of `memberOf` expressions.
//! - [`metering`]: Fargate (vCPU-seconds and GB-seconds, one-minute minimum) and EC2
//!   (instance-seconds) charges, as line items.
//! - [`status`]: the task and container lifecycle states, desired status, stop codes and health.
//! - [`task`], [`service`], [`cluster`]: the `DescribeTasks`, `DescribeServices` and
//!   `DescribeClusters` shapes that the control plane stores and returns.
//! - [`arn`]: the ARNs berth gives its resources, in region [`arn::REGION`] and account
//!   [`arn::ACCOUNT_ID`].
//!
//! Nothing in this module reads a file, opens a socket or looks at the clock: times come in as
//! [`Timestamp`]s, randomness as an [`rand::Rng`], and state as arguments.

pub mod arn;
pub mod cluster;
pub mod fargate;
pub mod metering;
mod pattern;
pub mod placement;
pub mod query;
pub mod service;
pub mod status;
pub mod task;
pub mod taskdef;
pub mod validate;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, with millisecond precision, as ECS's API carries it.
///
/// On the wire it is a number of seconds since the Unix epoch with a fractional part
/// (`1718012345.678`), which is how the ECS JSON protocol encodes every timestamp
/// (`registeredAt`, `createdAt`, `startedAt`, ...). Integers are accepted as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    millis: i64,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp { millis: 0 };

    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp { millis }
    }

    /// The timestamp `secs` seconds after the Unix epoch.
    pub const fn from_secs(secs: i64) -> Timestamp {
        Timestamp {
            millis: secs * 1000,
        }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.millis
    }

    /// The current time. The one place this module reads the clock; nothing inside the module
    /// calls it, callers pass the result in.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.millis.saturating_sub(earlier.millis).max(0) as u64)
    }

    /// `self` plus `duration`, saturating at the largest representable time.
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        let add = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp {
            millis: self.millis.saturating_add(add),
        }
    }

    /// Parses the date forms ECS's cluster query language accepts for `registeredAt`:
    /// `2018-06-18T22:28:28+00:00`, `2018-06-18T22:28:28Z`, `2018-06-18T22:28:28` (UTC) and
    /// `2018-06-18` (midnight UTC). Fractional seconds (`22:28:28.5Z`) are accepted too.
    pub fn parse_date(text: &str) -> Option<Timestamp> {
        let (date, rest) = match text.split_once(['T', 't']) {
            Some((date, rest)) => (date, Some(rest)),
            None => (text, None),
        };
        let mut parts = date.split('-');
        let year: i64 = parse_digits(parts.next()?, 4)?;
        let month: u32 = parse_digits(parts.next()?, 2)?;
        let day: u32 = parse_digits(parts.next()?, 2)?;
        if parts.next().is_some() || !(1..=12).contains(&month) {
            return None;
        }
        if day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let mut millis = days_from_civil(year, month, day) * 86_400_000;
        if let Some(rest) = rest {
            let (time, offset_millis) = split_offset(rest)?;
            let mut fields = time.split(':');
            let hour: i64 = parse_digits(fields.next()?, 2)?;
            let minute: i64 = parse_digits(fields.next()?, 2)?;
            let seconds = fields.next()?;
            if fields.next().is_some() || hour > 23 || minute > 59 {
                return None;
            }
            let (whole, fraction) = match seconds.split_once('.') {
                Some((whole, fraction)) => (whole, fraction),
                None => (seconds, ""),
            };
            let second: i64 = parse_digits(whole, 2)?;
            if second > 60 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let fraction_millis = fraction
                .bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
            millis += ((hour * 60 + minute) * 60 + second) * 1000 + fraction_millis;
            millis -= offset_millis;
        }
        Some(Timestamp { millis })
    }

    /// The timestamp as RFC 3339 in UTC, with milliseconds: `2024-06-10T09:45:12.345Z`.
    pub fn to_rfc3339(self) -> String {
        let days = self.millis.div_euclid(86_400_000);
        let in_day = self.millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
        let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Timestamp {
        let millis = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp { millis }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.millis % 1000 == 0 {
            serializer.serialize_i64(self.millis / 1000)
        } else {
            serializer.serialize_f64(self.millis as f64 / 1000.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds since the Unix epoch")
            }
            fn visit_f64<E: serde::de::Error>(self, secs: f64) -> Result<Timestamp, E> {
                if !secs.is_finite() {
                    return Err(E::custom("timestamp is not a finite number"));
                }
                Ok(Timestamp::from_millis((secs * 1000.0).round() as i64))
            }
            fn visit_i64<E: serde::de::Error>(self, secs: i64) -> Result<Timestamp, E> {
                Ok(Timestamp::from_millis(secs.saturating_mul(1000)))
            }
            fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<Timestamp, E> {
                let secs = i64::try_from(secs).map_err(|_| E::custom("timestamp out of range"))?;
                self.visit_i64(secs)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One entry of the `failures` list that ECS returns beside its results (`RunTask`,
/// `DescribeTasks`, ...): the resource concerned and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The ARN of the resource that failed (for placement, the container instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// The reason, in ECS's spelling: `RESOURCE:MEMORY`, `AGENT`, `MISSING`, ...
    pub reason: String,
    /// More detail, when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A resource tag, `{"key": ..., "value": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tag {
    /// The tag's key.
    pub key: String,
    /// The tag's value.
    #[serde(default)]
    pub value: String,
}

fn parse_digits<T: std::str::FromStr>(text: &str, width: usize) -> Option<T> {
    if text.len() != width || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Splits `22:28:28+02:00` into the time and the offset east of UTC in milliseconds.
fn split_offset(rest: &str) -> Option<(&str, i64)> {
    if let Some(time) = rest.strip_suffix(['Z', 'z']) {
        return Some((time, 0));
    }
    match rest.rfind(['+', '-']) {
        Some(at) => {
            let (time, offset) = rest.split_at(at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = offset[1..].split_once(':')?;
            let hours: i64 = parse_digits(hours, 2)?;
            let minutes: i64 = parse_digits(minutes, 2)?;
            Some((time, sign * (hours * 60 + minutes) * 60_000))
        }
        None => Some((rest, 0)),
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_serializes_as_epoch_seconds_and_round_trips() {
        let t = Timestamp::from_millis(1_718_012_345_678);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "1718012345.678");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);

        let whole = Timestamp::from_secs(1_718_012_345);
        assert_eq!(serde_json::to_string(&whole).unwrap(), "1718012345");
        assert_eq!(
            serde_json::from_str::<Timestamp>("1718012345").unwrap(),
            whole
        );
    }

    #[test]
    fn parse_date_accepts_the_cluster_query_language_forms() {
        let midnight = Timestamp::parse_date("2018-06-18").unwrap();
        assert_eq!(midnight.to_rfc3339(), "2018-06-18T00:00:00.000Z");
        let utc = Timestamp::parse_date("2018-06-18T22:28:28Z").unwrap();
        assert_eq!(utc.to_rfc3339(), "2018-06-18T22:28:28.000Z");
        assert_eq!(Timestamp::parse_date("2018-06-18T22:28:28").unwrap(), utc);
        assert_eq!(
            Timestamp::parse_date("2018-06-18T22:28:28+00:00").unwrap(),
            utc
        );
        let east = Timestamp::parse_date("2018-06-19T00:28:28+02:00").unwrap();
        assert_eq!(east, utc);
        let west = Timestamp::parse_date("2018-06-18T20:28:28.250-02:00").unwrap();
        assert_eq!(west.as_millis(), utc.as_millis() + 250);
        // 2018-06-18 is day 17700 since the epoch.
        assert_eq!(midnight.as_millis(), 17_700 * 86_400_000);
    }

    #[test]
    fn parse_date_rejects_malformed_dates() {
        for bad in [
            "2018-6-18",
            "2018-13-01",
            "2018-02-29",
            "2018-06-18T25:00:00Z",
            "2018-06-18T22:28",
            "yesterday",
            "",
        ] {
            assert_eq!(Timestamp::parse_date(bad), None, "{bad}");
        }
        assert!(Timestamp::parse_date("2020-02-29").is_some());
    }

    #[test]
    fn civil_conversion_round_trips_across_eras() {
        for days in [-800_000, -1, 0, 1, 10_957, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn durations_saturate() {
        let a = Timestamp::from_secs(100);
        let b = Timestamp::from_secs(160);
        assert_eq!(b.saturating_duration_since(a), Duration::from_secs(60));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(a.saturating_add(Duration::from_secs(60)), b);
    }
}
