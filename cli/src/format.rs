//! Small pieces the control-plane commands share: aligned tables, durations on the
//! command line ("90s", "1h30m"), protobuf times and enum names for people.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::output::utc;

/// Rows printed as columns separated by two spaces, the header first.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            text.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// "90s", "15m", "1h30m", "2d" → a duration; a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration> {
    ferry_crd::parse_duration(text).ok_or_else(|| {
        Error::Usage(format!(
            "{text:?} is not a duration; write it like 90s, 15m, 1h30m or 2d"
        ))
    })
}

/// [`parse_duration`] for clap's value_parser.
pub(crate) fn duration_arg(s: &str) -> std::result::Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

pub(crate) use ferry_rpc::proto_duration;

/// A protobuf time as "2025-01-02 03:04:05", or "-" when absent.
pub(crate) fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .map(utc)
        .unwrap_or_else(|| "-".into())
}

/// Seconds between two protobuf times, when both are there.
pub(crate) fn between(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Option<Duration> {
    let (from, to) = (from?, to?);
    let nanos =
        (to.seconds - from.seconds) as i128 * 1_000_000_000 + (to.nanos - from.nanos) as i128;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// A protobuf enum's name without its type prefix, lower case: `JOB_STATE_SUCCEEDED`
/// → "succeeded".
pub(crate) fn enum_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// "key=value" pairs from repeated flags, for mappings.
pub(crate) fn mappings(
    flag: &str,
    values: &[String],
) -> Result<std::collections::HashMap<String, String>> {
    let mut map = std::collections::HashMap::new();
    for v in values {
        let (from, to) = v
            .split_once('=')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{flag} {v:?} is not FROM=TO; write it like {flag} shop=shop-copy"
                ))
            })?;
        if map.insert(from.to_string(), to.to_string()).is_some() {
            return Err(Error::Usage(format!("{flag} maps {from:?} twice")));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5m3").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "ok".into()],
                vec!["long-name".into(), "x".into()],
            ],
        );
        assert_eq!(t, "NAME       STATE\na          ok\nlong-name  x\n");
    }

    #[test]
    fn mapping_flags() {
        let m = mappings("--namespace-map", &["a=b".into()]).unwrap();
        assert_eq!(m.get("a").map(String::as_str), Some("b"));
        assert!(mappings("--namespace-map", &["a".into()]).is_err());
        assert!(mappings("--namespace-map", &["a=b".into(), "a=c".into()]).is_err());
        assert_eq!(
            enum_name("JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_"),
            "partially-succeeded"
        );
    }
}
