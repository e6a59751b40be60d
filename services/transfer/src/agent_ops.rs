//! Following the agents' operations: each one's event stream into the job's progress,
//! summed over the volumes a step moves at once.

use std::future::Future;
use std::time::Duration;

use backon::Retryable as _;
use ferry_proto::v1::{ErrorCode, Progress, VolumeProgress};
use tracing::warn;

use crate::error::{Result, TransferError};
use crate::runtime::JobRun;

/// How long a volume's copy waits for its node's agent to answer again after it went
/// away mid-copy (an agent pod killed and restarted by its DaemonSet, a node's network
/// blip) before the job fails with the agent's last error.
pub(crate) const AGENT_RETURN_WAIT: Duration = Duration::from_secs(120);

/// Sums the latest progress of every volume of a step, and lists each volume's.
pub(crate) struct Aggregate<'a> {
    run: &'a JobRun,
    step: &'static str,
    /// Each volume's latest progress (what the sums add up) and its entry in the list.
    per_volume: parking_lot::Mutex<Vec<(Progress, VolumeProgress)>>,
}

impl<'a> Aggregate<'a> {
    /// `claims`: (namespace, claim) of each volume, by index.
    pub(crate) fn new(run: &'a JobRun, step: &'static str, claims: Vec<(String, String)>) -> Self {
        let per_volume = claims
            .into_iter()
            .map(|(pvc_namespace, pvc_name)| {
                let entry = VolumeProgress {
                    pvc_namespace,
                    pvc_name,
                    ..Default::default()
                };
                (Progress::default(), entry)
            })
            .collect();
        Aggregate {
            run,
            step,
            per_volume: parking_lot::Mutex::new(per_volume),
        }
    }

    /// `done`: the volume's copy finished (its summary arrived).
    fn update(&self, idx: usize, p: Progress, force: bool, done: bool) {
        // How the volume is reached is in the report once its copy started: read it
        // there once, not on every update.
        let unknown = self
            .per_volume
            .lock()
            .get(idx)
            .filter(|(_, v)| v.through.is_empty())
            .map(|(_, v)| v.pvc_name.clone());
        let through = unknown.map(|pvc| self.through(&pvc));
        let total = {
            let mut all = self.per_volume.lock();
            if let Some((latest, entry)) = all.get_mut(idx) {
                entry.files_done = p.files_done;
                entry.files_total = p.files_total;
                entry.bytes_read = p.bytes_read;
                entry.bytes_total = p.bytes_total;
                entry.done = done;
                if let Some(through) = through {
                    entry.through = through;
                }
                *latest = p;
            }
            let mut t = Progress {
                step: self.step.into(),
                ..Default::default()
            };
            for (v, entry) in all.iter() {
                t.files_done += v.files_done;
                t.files_total += v.files_total;
                t.bytes_read += v.bytes_read;
                t.bytes_new += v.bytes_new;
                t.bytes_uploaded += v.bytes_uploaded;
                t.bytes_total += v.bytes_total;
                t.rate_bytes_per_second += v.rate_bytes_per_second;
                t.volumes.push(entry.clone());
            }
            if t.rate_bytes_per_second > 0 && t.bytes_total > t.bytes_read {
                t.eta = Some(prost_types::Duration {
                    seconds: ((t.bytes_total - t.bytes_read) / t.rate_bytes_per_second) as i64,
                    nanos: 0,
                });
            }
            t
        };
        self.run.progress(total, force);
    }

    /// How claim `pvc` is read or written in this step, as the job's report has it.
    fn through(&self, pvc: &str) -> String {
        let restoring = self.step == crate::job::steps::RESTORE;
        self.run.with_report(|r| {
            r.volumes
                .iter()
                .find(|v| v.pvc_name == pvc)
                .map(|v| {
                    if restoring {
                        v.written_through.clone()
                    } else {
                        v.read_through.clone()
                    }
                })
                .unwrap_or_default()
        })
    }
}

/// One event of an agent's stream, as a job sees it.
pub(crate) enum Step<S> {
    Progress(Progress),
    /// The summary, with the progress it amounts to.
    Done(Progress, S),
    Nothing,
}

/// Follows an agent operation's event stream into the job's progress until its
/// summary. Dropping the stream on cancel is safe: the agent cancels an operation
/// whose client went away, and CancelJob has also sent it a Cancel.
pub(crate) async fn follow<E, S>(
    run: &JobRun,
    mut stream: tonic::Streaming<E>,
    agg: &Aggregate<'_>,
    idx: usize,
    what: &str,
    fail: impl Fn(&tonic::Status) -> TransferError,
    step: impl Fn(E) -> Step<S>,
) -> Result<S> {
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            () = run.cancel_token().cancelled() => return Err(run.cancelled()),
        };
        match message {
            Ok(Some(ev)) => match step(ev) {
                Step::Progress(p) => agg.update(idx, p, false, false),
                Step::Done(last, summary) => {
                    agg.update(idx, last, true, true);
                    return Ok(summary);
                }
                Step::Nothing => {}
            },
            Ok(None) => {
                return Err(fail(&tonic::Status::internal(format!(
                    "the {what} stream ended without a summary"
                ))));
            }
            Err(_) if run.cancel_token().is_cancelled() => return Err(run.cancelled()),
            Err(s) => return Err(fail(&s)),
        }
    }
}

/// The id of a job's agent operation: unique per job, attempt (a resumed job's),
/// step, volume and try, so a cancel reaches exactly it.
pub(crate) fn op_id(job: &str, attempt: u32, step: &str, idx: usize, tries: u32) -> String {
    match tries {
        0 => format!("{job}-a{attempt}-{step}-{idx}"),
        n => format!("{job}-a{attempt}-{step}-{idx}-t{n}"),
    }
}

/// Runs one agent operation (`op(try)`, `try` counting from 0) again while its agent is
/// unreachable or went away mid-stream, backing off, while the waits add up to no more
/// than [`AGENT_RETURN_WAIT`].
/// Each try is a whole new operation: a backup is taken again (deduplication makes the
/// part already uploaded cheap), a restore rewrites the volume to the snapshot.
pub(crate) async fn until_agent_answers<T, F, Fut>(run: &JobRun, what: &str, mut op: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    // 2 s doubling to 16 s while the waits add up to no more than the limit.
    let policy = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(16))
        .without_max_times()
        .with_total_delay(Some(AGENT_RETURN_WAIT))
        .with_jitter();
    let cancel = run.cancel_token().clone();
    let waking = cancel.clone();
    let mut tries = 0u32;
    let attempt = || {
        let this = tries;
        tries += 1;
        op(this)
    };
    attempt
        .retry(policy)
        // A cancelled job stops waiting at once; the next try then sees it cancelled.
        .sleep(move |wait| {
            let cancel = waking.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cancel.cancelled() => {}
                }
            }
        })
        .when(|e| {
            matches!(
                e,
                TransferError::Agent {
                    code: ErrorCode::Unreachable,
                    ..
                }
            ) && !cancel.is_cancelled()
        })
        .notify(|e, wait| {
            warn!(job = %run.id(), %what, error = %e, ?wait, "the agent went away; trying again");
        })
        .await
}
