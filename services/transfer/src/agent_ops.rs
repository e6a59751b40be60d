//! Following the agents' operations: each one's event stream into the job's progress,
//! summed over the volumes a step moves at once.

use ferry_proto::v1::Progress;

use crate::error::{Result, TransferError};
use crate::runtime::JobRun;

/// Sums the latest progress of every volume of a step.
pub(crate) struct Aggregate<'a> {
    run: &'a JobRun,
    step: &'static str,
    per_volume: parking_lot::Mutex<Vec<Progress>>,
}

impl<'a> Aggregate<'a> {
    pub(crate) fn new(run: &'a JobRun, step: &'static str, volumes: usize) -> Self {
        Aggregate {
            run,
            step,
            per_volume: parking_lot::Mutex::new(vec![Progress::default(); volumes]),
        }
    }

    fn update(&self, idx: usize, p: Progress, force: bool) {
        let total = {
            let mut all = self.per_volume.lock();
            if let Some(slot) = all.get_mut(idx) {
                *slot = p;
            }
            let mut t = Progress {
                step: self.step.into(),
                ..Default::default()
            };
            for v in all.iter() {
                t.files_done += v.files_done;
                t.files_total += v.files_total;
                t.bytes_read += v.bytes_read;
                t.bytes_new += v.bytes_new;
                t.bytes_uploaded += v.bytes_uploaded;
                t.bytes_total += v.bytes_total;
                t.rate_bytes_per_second += v.rate_bytes_per_second;
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
                Step::Progress(p) => agg.update(idx, p, false),
                Step::Done(last, summary) => {
                    agg.update(idx, last, true);
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
