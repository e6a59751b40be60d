//! CheckPair: each check timed, in the order it ran; the pair's status follows from them.
//!
//! On the source: the destination API with the pair's credential (reachable, permitted),
//! the destination's Ferry (reachable, still knows the pair), then the destination's own
//! view back towards the source (asked through its CheckPair). On the destination: the
//! credential it issued (still valid, still permitted) and the source's Ferry.
//!
//! With a repository (a profile name both clusters have): on the source, the profile
//! writes here (`repository-writable`) and the destination's profile of that name reads
//! (`repository-readable`, through the destination's CatalogService.CheckProfile) the same
//! repository; on the destination, the same two from the other end.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::{
    CheckDirection, CheckPairRequest, CheckPairResponse, CheckProfileRequest, CheckStatus,
    GetPairRequest, PairCheck, PairRole, PairStatus, RepositoryRef,
};

use crate::cluster::{self, KEY_ACCESS};
use crate::db::PairRow;
use crate::error::{PairingError, Result};
use crate::peer;
use crate::probe::ProbeResult;
use crate::service::{Inner, now};

const S2D: CheckDirection = CheckDirection::SourceToDestination;
const D2S: CheckDirection = CheckDirection::DestinationToSource;

/// The checks run so far.
struct Checks {
    list: Vec<PairCheck>,
    timeout: Duration,
    /// The cluster the checks are about (the other side), for timeout errors.
    cluster: String,
}

impl Checks {
    /// Runs one check, bounded by the timeout; true if it passed.
    async fn run<F>(&mut self, name: &str, direction: CheckDirection, check: F) -> bool
    where
        F: Future<Output = Result<String>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, check).await {
            Ok(r) => r,
            Err(_) => Err(PairingError::Timeout {
                what: format!("check {name}"),
                cluster: self.cluster.clone(),
                seconds: self.timeout.as_secs(),
            }),
        };
        let duration = prost_types::Duration::try_from(started.elapsed()).ok();
        let (status, message, error) = match result {
            Ok(message) => (CheckStatus::Passed, message, None),
            Err(e) => (CheckStatus::Failed, e.to_string(), Some(e.detail())),
        };
        self.list.push(PairCheck {
            name: name.into(),
            direction: direction as i32,
            status: status as i32,
            message,
            error,
            duration,
        });
        status == CheckStatus::Passed
    }

    fn skip(&mut self, name: &str, direction: CheckDirection, message: impl Into<String>) {
        self.list.push(PairCheck {
            name: name.into(),
            direction: direction as i32,
            status: CheckStatus::Skipped as i32,
            message: message.into(),
            error: None,
            duration: Some(prost_types::Duration::default()),
        });
    }
}

/// Which of the repository checks runs on this cluster and which at the other side.
struct RepositoryChecks {
    /// (name, direction, write) of the check through this cluster's profile.
    local: (&'static str, CheckDirection, bool),
    /// The same through the other cluster's profile of that name.
    peer: (&'static str, CheckDirection, bool),
}

/// The source writes restore points, the destination reads them.
const ON_SOURCE: RepositoryChecks = RepositoryChecks {
    local: ("repository-writable", S2D, true),
    peer: ("repository-readable", D2S, false),
};
const ON_DESTINATION: RepositoryChecks = RepositoryChecks {
    local: ("repository-readable", D2S, false),
    peer: ("repository-writable", S2D, true),
};

/// A repository id the request expects must be the one the profile opens.
fn expect_repository(r: &RepositoryRef, cluster: &str, found: &ProbeResult) -> Result<()> {
    if r.repository_id.is_empty() || r.repository_id == found.repository_id {
        return Ok(());
    }
    Err(PairingError::invalid(
        "repository.repository_id",
        format!(
            "profile {:?} on cluster {cluster} opens repository {}, not {}",
            r.profile, found.repository_id, r.repository_id
        ),
    ))
}

fn permissions_message(who: &str) -> String {
    let all: Vec<String> = KEY_ACCESS.iter().map(|a| a.describe()).collect();
    format!("{who} may {}", all.join(", "))
}

impl Inner {
    pub(crate) async fn check(
        self: Arc<Self>,
        req: CheckPairRequest,
        traceparent: Option<String>,
    ) -> Result<CheckPairResponse> {
        let row = self.find(&req.pair).await?;
        tracing::Span::current().record("pair_id", row.id.as_str());
        let mut checks = Checks {
            list: Vec::new(),
            timeout: self.config.peer_timeout,
            cluster: row.peer().name.clone(),
        };
        match row.role {
            PairRole::Destination => {
                self.check_destination(&row, &req, &mut checks, traceparent)
                    .await
            }
            _ => {
                self.check_source(&row, &req, &mut checks, traceparent)
                    .await
            }
        }
        let failed = checks
            .list
            .iter()
            .any(|c| c.status == CheckStatus::Failed as i32);
        let status = if failed {
            PairStatus::Degraded
        } else {
            PairStatus::Ready
        };
        self.db.set_status(&row.id, status, now()).await?;
        let row = self.find(&row.id).await?;
        tracing::info!(pair = %row.name, ?status, checks = checks.list.len(), "pair checked");
        Ok(CheckPairResponse {
            pair: Some(row.to_proto()),
            checks: checks.list,
        })
    }

    async fn check_source(
        &self,
        row: &PairRow,
        req: &CheckPairRequest,
        checks: &mut Checks,
        traceparent: Option<String>,
    ) {
        let dest = &row.destination;
        let timeout = self.config.peer_timeout;
        let mut client = None;
        let reached = checks
            .run("api-reachable", S2D, async {
                let creds = self.credentials(row)?;
                let c = cluster::pair_client(
                    &dest.name,
                    &dest.api_server_url,
                    &creds.ca_pem,
                    &creds.bearer_token,
                    timeout,
                    true,
                )
                .await?;
                let version = cluster::probe(&c, &dest.name, &dest.api_server_url).await?;
                client = Some(c);
                Ok(format!(
                    "reached {} with the pair's credential (Kubernetes {version})",
                    dest.api_server_url
                ))
            })
            .await;
        match client.filter(|_| reached) {
            Some(c) => {
                checks
                    .run("permissions", S2D, async {
                        let missing = cluster::missing_permissions(&c, &dest.name).await?;
                        if !missing.is_empty() {
                            return Err(PairingError::PermissionsMissing {
                                cluster: dest.name.clone(),
                                missing,
                            });
                        }
                        Ok(permissions_message("the pair's credential"))
                    })
                    .await;
            }
            None => checks.skip("permissions", S2D, "skipped: the API was not reached"),
        }

        let ferry_ok = checks
            .run(
                "ferry-reachable",
                S2D,
                self.peer_knows(row, traceparent.clone()),
            )
            .await;
        if ferry_ok {
            // The destination's checks towards the source, as it sees them. Its checks in
            // our direction repeat ours from the other end; ours are the ones that count.
            let started = Instant::now();
            let theirs = async {
                let peer = peer::connect(
                    &self.config.peer_tls,
                    &dest.name,
                    &dest.ferry_endpoint,
                    // It runs checks of its own, each bounded by the same timeout.
                    timeout * 4,
                    traceparent.clone(),
                )
                .await?;
                let resp = peer
                    .client
                    .clone()
                    .check_pair(CheckPairRequest {
                        pair: row.id.clone(),
                        repository: None,
                    })
                    .await
                    .map_err(|s| peer.error(s))?;
                Ok::<_, PairingError>(resp.into_inner().checks)
            }
            .await;
            match theirs {
                Ok(list) => checks
                    .list
                    .extend(list.into_iter().filter(|c| c.direction == D2S as i32)),
                Err(e) => checks.list.push(PairCheck {
                    name: "destination-checks".into(),
                    direction: D2S as i32,
                    status: CheckStatus::Failed as i32,
                    message: e.to_string(),
                    error: Some(e.detail()),
                    duration: prost_types::Duration::try_from(started.elapsed()).ok(),
                }),
            }
        } else {
            checks.skip(
                "ferry-reachable",
                D2S,
                "skipped: the destination's Ferry was not reached",
            );
        }
        self.check_repository(row, req, checks, ON_SOURCE, ferry_ok, traceparent)
            .await;
    }

    async fn check_destination(
        &self,
        row: &PairRow,
        req: &CheckPairRequest,
        checks: &mut Checks,
        traceparent: Option<String>,
    ) {
        let me = self.cluster().to_string();
        let mut identity = None;
        let valid = checks
            .run("credential-valid", S2D, async {
                let t = self.db.token(&row.token_id).await?.ok_or_else(|| {
                    PairingError::Internal {
                        detail: format!("pair {} has no token record on {me}", row.name),
                    }
                })?;
                let rejected = |detail: String| PairingError::CredentialRejected {
                    cluster: me.clone(),
                    url: self.config.api_server_url.clone(),
                    detail,
                };
                let bearer = self
                    .issued_bearer(&t)?
                    .ok_or_else(|| rejected("it was revoked".into()))?;
                let (user, groups) = cluster::review_token(&self.config.kube, &me, &bearer)
                    .await?
                    .ok_or_else(|| {
                        rejected(format!(
                            "it no longer authenticates (ServiceAccount {}/{} or its token deleted{})",
                            t.credential.namespace,
                            t.credential.service_account,
                            if t.credential.expires_at.is_some() { ", or expired" } else { "" }
                        ))
                    })?;
                let expiry = t
                    .credential
                    .expires_at
                    .map(|at| format!(", valid until {}", crate::service::rfc3339(at)))
                    .unwrap_or_default();
                let message =
                    format!("the credential issued to {} authenticates as {user}{expiry}", row.source.name);
                identity = Some((user, groups));
                Ok(message)
            })
            .await;
        match identity.filter(|_| valid) {
            Some((user, groups)) => {
                checks
                    .run("permissions", S2D, async {
                        let missing =
                            cluster::missing_permissions_of(&self.config.kube, &me, &user, &groups)
                                .await?;
                        if !missing.is_empty() {
                            return Err(PairingError::PermissionsMissing {
                                cluster: me.clone(),
                                missing,
                            });
                        }
                        Ok(permissions_message(&user))
                    })
                    .await;
            }
            None => checks.skip("permissions", S2D, "skipped: the credential is not valid"),
        }
        let ferry_ok = checks
            .run(
                "ferry-reachable",
                D2S,
                self.peer_knows(row, traceparent.clone()),
            )
            .await;
        self.check_repository(row, req, checks, ON_DESTINATION, ferry_ok, traceparent)
            .await;
    }

    /// The repository checks, when the request names a profile: this cluster's profile
    /// through the probe, the other side's through its catalog, and both must open the
    /// same repository.
    async fn check_repository(
        &self,
        row: &PairRow,
        req: &CheckPairRequest,
        checks: &mut Checks,
        which: RepositoryChecks,
        peer_reached: bool,
        traceparent: Option<String>,
    ) {
        let Some(r) = &req.repository else {
            checks.skip("repository", S2D, "skipped: no repository asked for");
            return;
        };
        let (local_name, local_direction, local_write) = which.local;
        let (peer_name, peer_direction, peer_write) = which.peer;
        let Some(probe) = self.config.profile_probe.clone() else {
            let why = format!(
                "skipped: the pairing service of cluster {} runs without a catalog, so profile \
                 {:?} cannot be checked (`ferry serve` runs both)",
                self.cluster(),
                r.profile
            );
            checks.skip(local_name, local_direction, why.clone());
            checks.skip(peer_name, peer_direction, why);
            return;
        };
        let me = self.cluster().to_string();
        let mut local_id = None;
        checks
            .run(local_name, local_direction, async {
                let found = probe.check(&r.profile, local_write).await?;
                expect_repository(r, &me, &found)?;
                if local_write && !found.writable {
                    return Err(PairingError::ProfileReadOnly {
                        profile: r.profile.clone(),
                        cluster: me.clone(),
                        detail: found.message,
                    });
                }
                local_id = Some(found.repository_id);
                Ok(found.message)
            })
            .await;
        if !peer_reached {
            let why = format!(
                "skipped: the Ferry of cluster {} was not reached",
                row.peer().name
            );
            checks.skip(peer_name, peer_direction, why);
            return;
        }
        checks
            .run(peer_name, peer_direction, async {
                let other = &row.peer().name;
                let found = self
                    .peer_profile(row, &r.profile, peer_write, traceparent)
                    .await?;
                if peer_write && !found.writable {
                    return Err(PairingError::ProfileReadOnly {
                        profile: r.profile.clone(),
                        cluster: other.clone(),
                        detail: found.message,
                    });
                }
                match local_id {
                    Some(id) if id != found.repository_id => {
                        Err(PairingError::RepositoryMismatch {
                            profile: r.profile.clone(),
                            cluster: me,
                            repository_id: id,
                            peer_cluster: other.clone(),
                            peer_repository_id: found.repository_id,
                        })
                    }
                    Some(_) => Ok(format!(
                        "{}; the same repository as on cluster {me}",
                        found.message
                    )),
                    None => Ok(format!(
                        "{}; not compared with cluster {me}'s, whose check failed",
                        found.message
                    )),
                }
            })
            .await;
    }

    /// The other side's catalog checks its profile `profile`.
    async fn peer_profile(
        &self,
        row: &PairRow,
        profile: &str,
        write: bool,
        traceparent: Option<String>,
    ) -> Result<ProbeResult> {
        let other = row.peer();
        let peer = peer::other_side(&self.config, row, traceparent).await?;
        let answer = peer
            .catalog
            .clone()
            .check_profile(CheckProfileRequest {
                name: profile.to_string(),
                write,
            })
            .await;
        match answer {
            Ok(r) => Ok(r.into_inner().into()),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                Err(PairingError::PeerWithoutCatalog {
                    cluster: other.name.clone(),
                    endpoint: other.ferry_endpoint.clone(),
                    detail: s.message().to_string(),
                })
            }
            // The network, not the catalog: said the way every call to the peer says it.
            Err(s) if ferry_rpc::detail(&s).is_none() => Err(peer.error(s)),
            Err(s) => Err(PairingError::from_profile_status(&other.name, profile, s)),
        }
    }

    /// The other side's Ferry answers and still has the pair.
    async fn peer_knows(&self, row: &PairRow, traceparent: Option<String>) -> Result<String> {
        let other = row.peer();
        let peer = peer::other_side(&self.config, row, traceparent).await?;
        match peer
            .client
            .clone()
            .get_pair(GetPairRequest {
                pair: row.id.clone(),
            })
            .await
        {
            Ok(_) => Ok(format!(
                "Ferry of {} at {} has this pair",
                other.name, other.ferry_endpoint
            )),
            Err(s) if s.code() == tonic::Code::NotFound => Err(PairingError::PeerLostPair {
                pair: row.name.clone(),
                cluster: other.name.clone(),
            }),
            Err(s) => Err(peer.error(s)),
        }
    }
}
