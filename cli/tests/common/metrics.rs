//! Reading a component's `/metrics` the way Prometheus does: an HTTP GET, parsed with
//! a Prometheus text parser.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One scrape's samples.
#[derive(Debug)]
pub struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; 0 when there is
    /// none (a counter never moved is not exported).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name}{labels:?} is not a single value: {other:?}"),
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().copied().unwrap_or(0.0)
    }

    /// The sum of a histogram's observations' count, `name` without `_count`.
    pub fn histogram_count(&self, name: &str) -> u64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |b| b.count) as u64
                }
                _ => 0,
            })
            .sum()
    }
}

/// GET http://`addr`/metrics, parsed.
pub fn scrape(addr: SocketAddr) -> Scrape {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connecting to the metrics port {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response from {addr}: {response}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    Scrape(
        prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("parsing /metrics: {e}")),
    )
}

/// Scrapes `port` of `target` (for example `deploy/ferry-transfer`) in `namespace`
/// through `kubectl port-forward`, as a user without network access to the pods would.
pub fn scrape_in_cluster(
    kubeconfig: &Path,
    context: &str,
    namespace: &str,
    target: &str,
    port: u16,
) -> Scrape {
    let mut child =
        Command::new(std::env::var_os("FERRY_KUBECTL").unwrap_or_else(|| "kubectl".into()))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--context",
                context,
                "-n",
                namespace,
                "port-forward",
                target,
            ])
            .arg(format!(":{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    // "Forwarding from 127.0.0.1:41233 -> 9090". The pipe stays open: kubectl writes
    // a line per connection, and a closed pipe would end it.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let local: SocketAddr = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("kubectl port-forward {target} said {line:?}"));
    let scraped = scrape(local);
    drop(out);
    let _ = child.kill();
    let _ = child.wait();
    scraped
}
