//! Repository checks need profiles, which the catalog owns: [`ProfileProbe`] checks one of
//! this cluster's profiles, and the other side's is checked through its Ferry's
//! `CatalogService.CheckProfile` (see check.rs). The process hosting both services hands
//! the pairing service a probe; [`CatalogProbe`] wraps an in-process catalog.

use async_trait::async_trait;
use ferry_proto::v1::catalog_service_server::CatalogService as CatalogApi;
use ferry_proto::v1::{CheckProfileRequest, CheckProfileResponse};

use crate::error::{PairingError, Result};

/// What checking a profile found (as `ferry.v1.CheckProfileResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeResult {
    /// Id of the repository the profile opens.
    pub repository_id: String,
    /// The repository opened with the profile's key and its restore points listed.
    pub readable: bool,
    /// A probe object was written and removed.
    pub writable: bool,
    /// What was checked, for people.
    pub message: String,
}

impl From<CheckProfileResponse> for ProbeResult {
    fn from(r: CheckProfileResponse) -> Self {
        ProbeResult {
            repository_id: r.repository_id,
            readable: r.readable,
            writable: r.writable,
            message: r.message,
        }
    }
}

/// Checks a profile of THIS cluster: its repository readable, and when `write` is asked
/// and the profile may write, writable. A failure (no such profile, store refused or
/// unreachable, wrong key) is an error; an import profile asked to write answers
/// `writable: false`.
#[async_trait]
pub trait ProfileProbe: Send + Sync {
    async fn check(&self, profile: &str, write: bool) -> Result<ProbeResult>;
}

/// A [`ProfileProbe`] backed by a catalog service in the same process (any
/// implementation of the `ferry.v1.CatalogService` server trait), called without gRPC.
#[derive(Clone)]
pub struct CatalogProbe<S> {
    catalog: S,
    cluster: String,
}

impl<S> std::fmt::Debug for CatalogProbe<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogProbe")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl<S> CatalogProbe<S> {
    /// `cluster` is this cluster's name, for errors.
    pub fn new(catalog: S, cluster: impl Into<String>) -> Self {
        CatalogProbe {
            catalog,
            cluster: cluster.into(),
        }
    }
}

#[async_trait]
impl<S: CatalogApi> ProfileProbe for CatalogProbe<S> {
    async fn check(&self, profile: &str, write: bool) -> Result<ProbeResult> {
        let request = tonic::Request::new(CheckProfileRequest {
            name: profile.to_string(),
            write,
        });
        match CatalogApi::check_profile(&self.catalog, request).await {
            Ok(r) => Ok(r.into_inner().into()),
            Err(status) => Err(PairingError::from_profile_status(
                &self.cluster,
                profile,
                status,
            )),
        }
    }
}

/// A [`ProfileProbe`] through the catalog's gRPC API, bearing the deployment's internal
/// credential (the standalone pairing service, each Deployment of the Helm chart).
#[derive(Clone)]
pub struct RemoteCatalogProbe {
    client: ferry_proto::v1::catalog_service_client::CatalogServiceClient<ferry_rpc::TracedChannel>,
    cluster: String,
}

impl std::fmt::Debug for RemoteCatalogProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCatalogProbe")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl RemoteCatalogProbe {
    /// The catalog at `endpoint`, called with `tls` (carrying the internal credential);
    /// connected on first use. `cluster` is this cluster's name, for errors.
    pub fn lazy(
        endpoint: &str,
        tls: &ferry_rpc::ClientTls,
        cluster: impl Into<String>,
    ) -> std::result::Result<Self, tonic::transport::Error> {
        let channel = tls.endpoint(endpoint)?.connect_lazy();
        Ok(RemoteCatalogProbe {
            client: ferry_proto::v1::catalog_service_client::CatalogServiceClient::new(
                tls.traced(endpoint, channel),
            ),
            cluster: cluster.into(),
        })
    }
}

#[async_trait]
impl ProfileProbe for RemoteCatalogProbe {
    async fn check(&self, profile: &str, write: bool) -> Result<ProbeResult> {
        let request = CheckProfileRequest {
            name: profile.to_string(),
            write,
        };
        match self.client.clone().check_profile(request).await {
            Ok(r) => Ok(r.into_inner().into()),
            Err(status) => Err(PairingError::from_profile_status(
                &self.cluster,
                profile,
                status,
            )),
        }
    }
}
