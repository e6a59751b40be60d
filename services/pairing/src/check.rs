//! CheckPair: each check timed, in the order it ran; the pair's status follows from them.
//!
//! On the source: the destination API with the pair's credential (reachable, permitted),
//! the destination's Ferry (reachable, still knows the pair), then the destination's own
//! view back towards the source (asked through its CheckPair). On the destination: the
//! credential it issued (still valid, still permitted) and the source's Ferry.
//!
//! With a repository (a profile name both clusters have): on the source, the profile
//! writes here (`repository-writable`) and the destination's profile of that name reads
//! (`repository-readable`) the same repository; on the destination, the same two from
//! the other end. Each side checks only its own profile, through its own catalog: the
//! other side's half comes from asking its CheckPair, which the other side's Ferry
//! admits by the pair's proof (see peer.rs) and answers with its own checks only, so
//! no profile check is ever open to callers from outside the cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::v1::{
    CheckDirection, CheckPairRequest, CheckPairResponse, CheckStatus, GetPairRequest, PairCheck,
    PairRole, PairStatus, RepositoryRef,
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

/// A repository id the request expects must be the one the profile opens: the other
/// side's, when it asks (`peer` names it), else the caller's.
fn expect_repository(
    r: &RepositoryRef,
    cluster: &str,
    peer: Option<&str>,
    found: &ProbeResult,
) -> Result<()> {
    if r.repository_id.is_empty() || r.repository_id == found.repository_id {
        return Ok(());
    }
    if let Some(peer) = peer {
        return Err(PairingError::RepositoryMismatch {
            profile: r.profile.clone(),
            cluster: peer.to_string(),
            repository_id: r.repository_id.clone(),
            peer_cluster: cluster.to_string(),
            peer_repository_id: found.repository_id.clone(),
        });
    }
    Err(PairingError::invalid(
        "repository.repository_id",
        format!(
            "profile {:?} on cluster {cluster} opens repository {}, not {}",
            r.profile, found.repository_id, r.repository_id
        ),
    ))
}

/// How jobs write the application's objects on the destination, by whether it trusts
/// the identities this cluster names.
fn writes_as_users(trusted: bool, destination: &str) -> String {
    if trusted {
        format!(
            "cluster {destination} trusts the users this cluster names: jobs write there as \
             them, with or without their own token for it (schedules and Migration objects \
             included)"
        )
    } else {
        format!(
            "cluster {destination} verifies who writes there itself: a job writes there \
             only with its caller's own token for it (ferry migrate --to-context); \
             schedules and Migration objects cannot migrate to it until its administrator \
             trusts this cluster's users (--trust-source-identities)"
        )
    }
}

fn permissions_message(who: &str) -> String {
    let all: Vec<String> = KEY_ACCESS.iter().map(|a| a.describe()).collect();
    format!("{who} may {}", all.join(", "))
}

impl Inner {
    /// Runs the checks of pair `req.pair`; `from_peer` when the other side's Ferry asks
    /// for this side's half, which then calls nothing back but GetPair.
    pub(crate) async fn check(
        self: Arc<Self>,
        req: CheckPairRequest,
        traceparent: Option<String>,
        from_peer: bool,
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
                self.check_destination(&row, &req, &mut checks, traceparent, from_peer)
                    .await
            }
            _ => {
                self.check_source(&row, &req, &mut checks, traceparent, from_peer)
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
        from_peer: bool,
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
                checks
                    .run("writes-as-users", S2D, async {
                        Ok(writes_as_users(
                            cluster::may_impersonate(&c, &dest.name).await?,
                            &dest.name,
                        ))
                    })
                    .await;
            }
            None => {
                checks.skip("permissions", S2D, "skipped: the API was not reached");
                checks.skip("writes-as-users", S2D, "skipped: the API was not reached");
            }
        }

        let ferry_ok = checks
            .run(
                "ferry-reachable",
                S2D,
                self.peer_knows(row, traceparent.clone()),
            )
            .await;
        let local_id = self
            .check_local_repository(row, req, checks, ON_SOURCE, from_peer)
            .await;
        if from_peer {
            return;
        }
        if !ferry_ok {
            checks.skip(
                "ferry-reachable",
                D2S,
                "skipped: the destination's Ferry was not reached",
            );
            self.skip_peer_repository(row, req, checks, ON_SOURCE);
            return;
        }
        // The destination's checks towards the source, and its own profile, as it sees
        // them. Its checks in our direction repeat ours from the other end; ours are the
        // ones that count.
        let started = Instant::now();
        match self
            .peer_checks(row, req, local_id, timeout * 4, traceparent)
            .await
        {
            Ok(list) => checks
                .list
                .extend(list.into_iter().filter(|c| c.direction == D2S as i32)),
            Err(e) => {
                checks.list.push(PairCheck {
                    name: "destination-checks".into(),
                    direction: D2S as i32,
                    status: CheckStatus::Failed as i32,
                    message: e.to_string(),
                    error: Some(e.detail()),
                    duration: prost_types::Duration::try_from(started.elapsed()).ok(),
                });
                self.skip_peer_repository(row, req, checks, ON_SOURCE);
            }
        }
    }

    async fn check_destination(
        &self,
        row: &PairRow,
        req: &CheckPairRequest,
        checks: &mut Checks,
        traceparent: Option<String>,
        from_peer: bool,
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
        let local_id = self
            .check_local_repository(row, req, checks, ON_DESTINATION, from_peer)
            .await;
        if from_peer || req.repository.is_none() {
            return;
        }
        if !ferry_ok {
            self.skip_peer_repository(row, req, checks, ON_DESTINATION);
            return;
        }
        // The source's profile, as the source checks it (its other checks are ours to
        // run from there).
        let (name, direction, _) = ON_DESTINATION.peer;
        let started = Instant::now();
        let theirs = self
            .peer_checks(
                row,
                req,
                local_id,
                self.config.peer_timeout * 4,
                traceparent,
            )
            .await
            .map(|list| {
                list.into_iter()
                    .find(|c| c.name == name && c.direction == direction as i32)
            });
        match theirs {
            Ok(Some(check)) => checks.list.push(check),
            Ok(None) => checks.skip(
                name,
                direction,
                format!(
                    "skipped: the Ferry of cluster {} did not check its profile",
                    row.peer().name
                ),
            ),
            Err(e) => checks.list.push(PairCheck {
                name: name.into(),
                direction: direction as i32,
                status: CheckStatus::Failed as i32,
                message: e.to_string(),
                error: Some(e.detail()),
                duration: prost_types::Duration::try_from(started.elapsed()).ok(),
            }),
        }
    }

    /// The other side's own checks of the pair (its CheckPair, proving the pair), with
    /// the repository of `req` expected to be `local_id` when this side opened one.
    async fn peer_checks(
        &self,
        row: &PairRow,
        req: &CheckPairRequest,
        local_id: Option<String>,
        timeout: Duration,
        traceparent: Option<String>,
    ) -> Result<Vec<PairCheck>> {
        let peer = peer::other_side(&self.config, row, timeout, traceparent).await?;
        let repository = req.repository.as_ref().map(|r| RepositoryRef {
            profile: r.profile.clone(),
            repository_id: local_id.unwrap_or_else(|| r.repository_id.clone()),
        });
        let resp = peer
            .client
            .clone()
            .check_pair(CheckPairRequest {
                pair: row.id.clone(),
                repository,
            })
            .await
            .map_err(|s| peer.error(s))?;
        Ok(resp.into_inner().checks)
    }

    /// Records the other side's repository check as skipped, when one was asked for.
    fn skip_peer_repository(
        &self,
        row: &PairRow,
        req: &CheckPairRequest,
        checks: &mut Checks,
        which: RepositoryChecks,
    ) {
        if req.repository.is_some() {
            let (name, direction, _) = which.peer;
            let why = format!(
                "skipped: the Ferry of cluster {} was not reached",
                row.peer().name
            );
            checks.skip(name, direction, why);
        }
    }

    /// This side's repository check, when the request names a profile: this cluster's
    /// profile through the probe (the other side's is the other side's to check). The
    /// id of the repository it opened, when it passed.
    async fn check_local_repository(
        &self,
        row: &PairRow,
        req: &CheckPairRequest,
        checks: &mut Checks,
        which: RepositoryChecks,
        from_peer: bool,
    ) -> Option<String> {
        let Some(r) = &req.repository else {
            checks.skip("repository", S2D, "skipped: no repository asked for");
            return None;
        };
        let (local_name, local_direction, local_write) = which.local;
        let Some(probe) = self.config.profile_probe.clone() else {
            let why = format!(
                "skipped: the pairing service of cluster {} runs without a catalog, so profile \
                 {:?} cannot be checked (`ferry serve` runs both)",
                self.cluster(),
                r.profile
            );
            checks.skip(local_name, local_direction, why);
            return None;
        };
        let me = self.cluster().to_string();
        let peer = row.peer().name.clone();
        let expected_from = from_peer.then_some(peer.as_str());
        let mut local_id = None;
        checks
            .run(local_name, local_direction, async {
                let found = probe.check(&r.profile, local_write).await?;
                expect_repository(r, &me, expected_from, &found)?;
                if local_write && !found.writable {
                    return Err(PairingError::ProfileReadOnly {
                        profile: r.profile.clone(),
                        cluster: me.clone(),
                        detail: found.message,
                    });
                }
                local_id = Some(found.repository_id);
                Ok(match expected_from {
                    Some(peer) if !r.repository_id.is_empty() => {
                        format!(
                            "{}; the same repository as on cluster {peer}",
                            found.message
                        )
                    }
                    _ => found.message,
                })
            })
            .await;
        local_id
    }

    /// The other side's Ferry answers and still has the pair.
    async fn peer_knows(&self, row: &PairRow, traceparent: Option<String>) -> Result<String> {
        let other = row.peer();
        let peer =
            peer::other_side(&self.config, row, self.config.peer_timeout, traceparent).await?;
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
