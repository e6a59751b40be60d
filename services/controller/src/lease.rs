//! One replica acts at a time: the holder of a coordination.k8s.io Lease runs the
//! reconcilers and renews the Lease; the others wait for it to expire. Every write to
//! the Lease carries the resourceVersion it read, so two replicas that race for it
//! cannot both win. A holder that cannot renew in time stops acting before another
//! replica may take over (it gives up at two thirds of the Lease's duration).

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

/// A Lease and this replica's name in it.
#[derive(Clone, Debug)]
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// What one attempt to hold the Lease found.
enum Held {
    /// This replica holds it until at least `deadline`.
    Yes { deadline: Instant },
    /// Another replica does.
    No { holder: String },
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderLease {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaderLease {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// Runs `work` whenever this replica holds the Lease, cancelling it (and waiting for
    /// it to return) when the Lease is lost, until `shutdown`; then hands the Lease back.
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, work: F)
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let retry = self.duration / 3;
        loop {
            let held = tokio::select! {
                () = shutdown.cancelled() => return,
                held = self.try_hold() => held,
            };
            let mut deadline = match held {
                Ok(Held::Yes { deadline }) => deadline,
                Ok(Held::No { holder }) => {
                    tracing::debug!(%holder, "another replica holds the lease");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(retry) => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "reading the lease");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(retry) => continue,
                    }
                }
            };
            tracing::info!(lease = %self.name, identity = %self.identity, "holding the lease: acting");
            let acting = shutdown.child_token();
            let task = tokio::spawn(work(acting.clone()));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(retry) => {}
                }
                match self.try_hold().await {
                    Ok(Held::Yes { deadline: next }) => deadline = next,
                    Ok(Held::No { holder }) => {
                        tracing::warn!(%holder, "lost the lease: stopping");
                        break;
                    }
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!(error = %e, "renewing the lease; trying again");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew the lease in time: stopping");
                        break;
                    }
                }
            }
            acting.cancel();
            let _ = task.await;
            if shutdown.is_cancelled() {
                self.release().await;
                return;
            }
        }
    }

    /// Takes or renews the Lease if it is free, expired or this replica's.
    async fn try_hold(&self) -> Result<Held, kube::Error> {
        let asked = Instant::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        // Give up acting well before another replica may take over.
        let deadline = asked + self.duration * 2 / 3;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Held::Yes { deadline }),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Held::No {
                    holder: "another replica (it created the lease first)".into(),
                }),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => {
                let until =
                    renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(secs));
                until < k8s_openapi::jiff::Timestamp::now()
            }
            _ => true,
        };
        if !mine && !holder.is_empty() && !expired {
            return Ok(Held::No { holder });
        }
        if !mine {
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now());
        // The resourceVersion read above makes this fail if anyone wrote in between.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Held::Yes { deadline }),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Held::No {
                holder: "another replica (it wrote the lease first)".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Hands the Lease back so another replica takes over at once.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(error = %e, "handing the lease back");
        } else {
            tracing::info!(lease = %self.name, "handed the lease back");
        }
    }
}
