//! Writing results to stdout and formatting numbers for people. Output goes through
//! `write_all` rather than `println!`, so a closed pipe is an error, not a panic.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Writes text to stdout as is.
pub(crate) fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// Writes one JSON value and a newline to stdout.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Output(std::io::Error::other(e)))?;
    text.push('\n');
    print(&text)
}

/// How control-plane commands print their results: tables for people, or the API's
/// messages as canonical protobuf JSON (the shape grpcurl prints) or as the same
/// object in YAML, for scripts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    Yaml,
}

impl Format {
    /// Whether results are data for a program (JSON or YAML) rather than text.
    pub(crate) fn structured(self) -> bool {
        self != Format::Text
    }
}

/// Writes one value as JSON, or as YAML with `Format::Yaml`; `Format::Text` means
/// JSON here (its callers print text themselves).
pub(crate) fn print_data<T: Serialize + ?Sized>(value: &T, format: Format) -> Result<()> {
    match format {
        Format::Yaml => print(
            &serde_yaml_ng::to_string(value)
                .map_err(|e| Error::Output(std::io::Error::other(e)))?,
        ),
        Format::Json | Format::Text => print_json(value),
    }
}

/// Writes one API message (`full_name` like "ferry.v1.JobReport") as protobuf JSON:
/// camelCase fields, enums by name, default values left out. With `Format::Yaml`, the
/// same object in YAML (same keys and values, 64-bit numbers as strings too).
pub(crate) fn print_proto<M: prost::Message>(
    message: &M,
    full_name: &str,
    format: Format,
) -> Result<()> {
    let dynamic = dynamic(message, full_name)?;
    let broken = |what: String| Error::Output(std::io::Error::other(what));
    let options = prost_reflect::SerializeOptions::new();
    let text = match format {
        Format::Yaml => {
            // Serialized straight to YAML rather than through serde_json::Value, whose
            // map would sort the fields: both formats keep the API's field order.
            let mut out = Vec::new();
            dynamic
                .serialize_with_options(&mut serde_yaml_ng::Serializer::new(&mut out), &options)
                .map_err(|e| broken(format!("writing {full_name} as YAML: {e}")))?;
            String::from_utf8_lossy(&out).into_owned()
        }
        Format::Json | Format::Text => {
            let mut out = serde_json::Serializer::pretty(Vec::new());
            dynamic
                .serialize_with_options(&mut out, &options)
                .map_err(|e| broken(format!("writing {full_name} as JSON: {e}")))?;
            let mut text = String::from_utf8_lossy(&out.into_inner()).into_owned();
            text.push('\n');
            text
        }
    };
    print(&text)
}

/// `message` as a reflected message of the API's descriptor set, for serializing.
fn dynamic<M: prost::Message>(
    message: &M,
    full_name: &str,
) -> Result<prost_reflect::DynamicMessage> {
    static POOL: std::sync::OnceLock<Option<prost_reflect::DescriptorPool>> =
        std::sync::OnceLock::new();
    let broken = |what: String| Error::Output(std::io::Error::other(what));
    let pool = POOL
        .get_or_init(|| {
            prost_reflect::DescriptorPool::decode(ferry_proto::FILE_DESCRIPTOR_SET).ok()
        })
        .as_ref()
        .ok_or_else(|| broken("the API's descriptor set does not decode".into()))?;
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| broken(format!("no message {full_name} in the API")))?;
    prost_reflect::DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| broken(format!("re-reading {full_name}: {e}")))
}

/// 1536 → "1.5 KiB".
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Bytes per second over `elapsed`, as "12.3 MiB/s".
pub(crate) fn rate(n: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{}/s", bytes((n as f64 / secs) as u64))
}

/// 75 s → "1:15", 3725 s → "1:02:05".
pub(crate) fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// "2025-01-02 03:04:05" in UTC.
pub(crate) fn utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// RFC 3339, for JSON.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| utc(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_print_as_protobuf_json() {
        let report = ferry_proto::v1::JobReport {
            job_id: "job-1".into(),
            state: ferry_proto::v1::JobState::Succeeded as i32,
            restore_point_id: String::new(),
            ..Default::default()
        };
        // The same conversion print_proto does, without stdout.
        let pool = prost_reflect::DescriptorPool::decode(ferry_proto::FILE_DESCRIPTOR_SET).unwrap();
        let d = pool.get_message_by_name("ferry.v1.JobReport").unwrap();
        let m = prost_reflect::DynamicMessage::decode(
            d,
            prost::Message::encode_to_vec(&report).as_slice(),
        )
        .unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jobId": "job-1", "state": "JOB_STATE_SUCCEEDED"})
        );
    }

    #[test]
    fn yaml_is_the_same_object_as_json() {
        let report = ferry_proto::v1::JobReport {
            job_id: "job-1".into(),
            state: ferry_proto::v1::JobState::Failed as i32,
            volumes: vec![ferry_proto::v1::VolumeOutcome {
                pvc_name: "data-db-0".into(),
                bytes_total: 5 << 30,
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = dynamic(&report, "ferry.v1.JobReport").unwrap();
        let options = prost_reflect::SerializeOptions::new();
        let mut yaml = Vec::new();
        m.serialize_with_options(&mut serde_yaml_ng::Serializer::new(&mut yaml), &options)
            .unwrap();
        let yaml = String::from_utf8(yaml).unwrap();
        assert!(
            yaml.starts_with("jobId: job-1\nstate: JOB_STATE_FAILED\n"),
            "{yaml}"
        );
        let from_yaml: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let json = m
            .serialize_with_options(serde_json::value::Serializer, &options)
            .unwrap();
        assert_eq!(from_yaml, json);
        assert_eq!(json["volumes"][0]["bytesTotal"], "5368709120", "{json:#}");
    }

    #[test]
    fn human_numbers() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(rate(10 << 20, Duration::from_secs(2)), "5.0 MiB/s");
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(utc(t), "2023-11-14 22:13:20");
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
