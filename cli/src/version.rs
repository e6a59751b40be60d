//! `ferry version`: this client's version and the version of the Ferry it reaches
//! (`--context` or `--server`), which answers `ferry.v1.VersionService/GetVersion`
//! without sign-in. When no Ferry answers, it prints the client's version and the
//! reason, and exits 1.

use ferry_client::ClientError;

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::output::{Format, print, print_data};

/// This client's version.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `ferry version`.
pub async fn run(connect: &ConnectArgs, format: Format) -> Result<()> {
    let server = match connect.ferry().await {
        Ok(ferry) => ferry
            .server_version()
            .await
            .map(|v| (v, ferry.endpoint().to_owned())),
        Err(Error::Client(e)) => Err(e),
        Err(other) => return Err(other),
    };
    let commit = ferry_rpc::version::GIT_COMMIT.trim();
    match format {
        Format::Json | Format::Yaml => {
            let mut out = serde_json::json!({
                "client": {"version": CLIENT_VERSION, "gitCommit": commit},
            });
            match &server {
                Ok((v, endpoint)) => {
                    out["server"] = serde_json::json!({
                        "version": v.version,
                        "component": v.component,
                        "gitCommit": v.git_commit,
                        "endpoint": endpoint,
                    });
                }
                Err(e) => {
                    out["server"] = serde_json::Value::Null;
                    out["serverError"] = serde_json::Value::String(reason(e));
                }
            }
            print_data(&out, format)?;
        }
        Format::Text => {
            let mut text = format!("Client: {}\n", describe(CLIENT_VERSION, "", commit));
            match &server {
                Ok((v, endpoint)) => text.push_str(&format!(
                    "Server: {} at {endpoint}\n",
                    describe(&v.version, &v.component, &v.git_commit)
                )),
                Err(_) => text.push_str("Server: unknown\n"),
            }
            print(&text)?;
        }
    }
    match server {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::ServerVersion(reason(&e))),
    }
}

/// "0.1.0 (gateway, commit abc)".
fn describe(version: &str, component: &str, commit: &str) -> String {
    let details: Vec<String> = [
        (!component.is_empty()).then(|| component.to_owned()),
        (!commit.is_empty()).then(|| format!("commit {commit}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if details.is_empty() {
        version.to_owned()
    } else {
        format!("{version} ({})", details.join(", "))
    }
}

/// Why the server's version is unknown, in one line.
fn reason(e: &ClientError) -> String {
    if e.code() == Some(tonic::Code::Unimplemented) {
        return format!(
            "{e}; that Ferry does not answer GetVersion, so it is older than this client"
        );
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_one_line() {
        assert_eq!(describe("0.1.0", "", ""), "0.1.0");
        assert_eq!(describe("0.1.0", "gateway", ""), "0.1.0 (gateway)");
        assert_eq!(
            describe("0.1.0", "serve", "abc123"),
            "0.1.0 (serve, commit abc123)"
        );
    }
}
