//! `ferry.v1.VersionService`, which every [`crate::Server`] answers: the build's version,
//! the component that answers and, when the build recorded it, the git commit. It needs
//! no sign-in: it reveals only the version.

use ferry_proto::v1::version_service_server::{VersionService, VersionServiceServer};
use ferry_proto::v1::{GetVersionRequest, GetVersionResponse};

/// Ferry's release version (every crate of the workspace shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this build was made from: `FERRY_GIT_COMMIT` when the build was run
/// with it set (`FERRY_GIT_COMMIT=$(git rev-parse HEAD) cargo build ...`), else empty.
pub const GIT_COMMIT: &str = match option_env!("FERRY_GIT_COMMIT") {
    Some(commit) => commit,
    None => "",
};

/// What `GetVersion` answers for `component`.
pub fn response(component: &str) -> GetVersionResponse {
    GetVersionResponse {
        version: VERSION.to_owned(),
        component: component.to_owned(),
        git_commit: GIT_COMMIT.trim().to_owned(),
    }
}

/// The service a server named `component` answers `GetVersion` with.
#[derive(Debug, Clone)]
pub struct Version {
    component: &'static str,
}

impl Version {
    pub fn new(component: &'static str) -> Version {
        Version { component }
    }

    pub fn into_server(self) -> VersionServiceServer<Version> {
        VersionServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl VersionService for Version {
    async fn get_version(
        &self,
        _request: tonic::Request<GetVersionRequest>,
    ) -> Result<tonic::Response<GetVersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(response(self.component)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_build_and_the_component() {
        let r = response("gateway");
        assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(r.component, "gateway");
        assert_eq!(r.git_commit, option_env!("FERRY_GIT_COMMIT").unwrap_or(""));
    }
}
