//! The access flags every standalone Ferry service takes, and what they resolve to.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::{Authorizer, InternalTokenError, read_internal_token};

/// Who may call a service: its cluster's users, reviewed by that cluster; administrators
/// by group; Ferry's own components by the internal credential.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// Kubernetes groups whose members administer Ferry (all namespaces, every job).
    /// Anyone the cluster lets do everything everywhere is an administrator too.
    #[arg(
        long = "admin-group",
        env = "FERRY_ADMIN_GROUPS",
        value_delimiter = ',',
        default_value = "system:masters"
    )]
    pub admin_groups: Vec<String>,
    /// File holding the deployment's internal credential, the secret Ferry's own
    /// components bear when they call each other (one Kubernetes Secret, mounted into
    /// every component). Without it, internal calls are refused.
    #[arg(long, env = "FERRY_INTERNAL_TOKEN_FILE", value_name = "FILE")]
    pub internal_token_file: Option<PathBuf>,
    /// Serve every caller without checking who they are or what they may do. Only on a
    /// loopback address, for tests: the service refuses to start with it elsewhere.
    #[arg(long)]
    pub insecure_no_access_checks: bool,
}

/// The access flags do not make a safe configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessConfigError {
    #[error(
        "--insecure-no-access-checks with --listen {listen}: a service that checks no \
         callers serves only loopback; listen on 127.0.0.1, or drop the flag"
    )]
    UncheckedOffLoopback { listen: SocketAddr },
    #[error(transparent)]
    InternalToken(#[from] InternalTokenError),
}

impl Default for AccessArgs {
    fn default() -> Self {
        AccessArgs {
            admin_groups: vec!["system:masters".into()],
            internal_token_file: None,
            insecure_no_access_checks: false,
        }
    }
}

impl AccessArgs {
    /// Fails when callers would go unchecked on an address other hosts reach.
    pub fn check(&self, listen: SocketAddr) -> Result<(), AccessConfigError> {
        if self.insecure_no_access_checks && !listen.ip().is_loopback() {
            return Err(AccessConfigError::UncheckedOffLoopback { listen });
        }
        Ok(())
    }

    /// The reviewer of callers, with `client` for the cluster named `cluster`; None only
    /// under --insecure-no-access-checks, with a warning.
    pub fn authorizer(&self, client: &kube::Client, cluster: &str) -> Option<Authorizer> {
        if self.insecure_no_access_checks {
            tracing::warn!(
                "--insecure-no-access-checks: every caller may do anything; never expose \
                 this service"
            );
            return None;
        }
        Some(Authorizer::new(client.clone(), cluster).with_admin_groups(self.admin_groups.clone()))
    }

    /// The internal credential, when a file is given.
    pub fn internal_token(&self) -> Result<Option<String>, InternalTokenError> {
        self.internal_token_file
            .as_deref()
            .map(read_internal_token)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchecked_service_serves_only_loopback() {
        let args = AccessArgs {
            insecure_no_access_checks: true,
            ..AccessArgs::default()
        };
        let addr = |s: &str| s.parse::<SocketAddr>().expect("address");
        assert!(args.check(addr("127.0.0.1:7444")).is_ok());
        assert!(args.check(addr("[::1]:7444")).is_ok());
        let refused = args.check(addr("0.0.0.0:7444")).expect_err("off loopback");
        assert!(refused.to_string().contains("0.0.0.0:7444"), "{refused}");
        assert!(AccessArgs::default().check(addr("0.0.0.0:7444")).is_ok());
    }
}
