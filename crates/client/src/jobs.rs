//! Following a transfer job: its event stream, waiting for its report, cancelling it.

use std::time::{Duration, Instant};

use ferry_proto::v1::{
    CancelJobRequest, CutoverRequest, GetJobRequest, JobEvent, JobRef, JobReport, JobState,
    WatchJobRequest, job_event,
};
use futures::StreamExt;

use crate::Ferry;
use crate::error::{ClientError, Result};

/// How long [`Job::wait`] keeps reconnecting to a Ferry that went away (restarting).
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// True for the states a job never leaves.
pub fn is_final(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::PartiallySucceeded | JobState::Failed | JobState::Cancelled
    )
}

/// A job on one Ferry.
#[derive(Debug, Clone)]
pub struct Job {
    ferry: Ferry,
    id: String,
}

impl Job {
    pub(crate) fn new(ferry: Ferry, id: &str) -> Job {
        Job {
            ferry,
            id: id.into(),
        }
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn job_ref(&self) -> Option<JobRef> {
        Some(JobRef {
            id: self.id.clone(),
        })
    }

    /// The job as it is now, and its report once it has finished.
    pub async fn get(&self) -> Result<(ferry_proto::v1::Job, Option<JobReport>)> {
        let resp = self
            .ferry
            .transfer()
            .get_job(GetJobRequest {
                job: self.job_ref(),
            })
            .await
            .map_err(|s| self.ferry.rpc_error("GetJob", s))?
            .into_inner();
        let job = resp.job.ok_or_else(|| ClientError::Protocol {
            endpoint: self.ferry.endpoint().into(),
            problem: format!("GetJob {} answered without the job", self.id),
        })?;
        Ok((job, resp.report))
    }

    /// The job's events: its state first, then steps and progress, the report last.
    pub async fn events(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<JobEvent>> + Send + 'static> {
        let stream = self
            .ferry
            .transfer()
            .watch_job(WatchJobRequest {
                job: self.job_ref(),
            })
            .await
            .map_err(|s| self.ferry.rpc_error("WatchJob", s))?
            .into_inner();
        let ferry = self.ferry.clone();
        Ok(stream.map(move |r| r.map_err(|s| ferry.rpc_error("WatchJob", s))))
    }

    /// Follows the job until its report, calling `on_event` for every event. A Ferry
    /// that goes away mid-job (a restart) is reconnected to for up to two minutes; the
    /// events replay from the job's current state.
    pub async fn wait(&self, mut on_event: impl FnMut(&JobEvent)) -> Result<JobReport> {
        let mut lost_since: Option<Instant> = None;
        loop {
            let outcome: Result<Option<Box<JobReport>>> = async {
                let mut events = self.events().await?;
                while let Some(event) = events.next().await {
                    let event = event?;
                    lost_since = None;
                    on_event(&event);
                    if let Some(job_event::Event::Report(report)) = event.event {
                        return Ok(Some(report));
                    }
                }
                Ok(None)
            }
            .await;
            match outcome {
                Ok(Some(report)) => return Ok(*report),
                // A stream that ends without a report: the server is shutting down.
                Ok(None) => {}
                Err(e) if e.is_unreachable() => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RECONNECT_FOR {
                        return Err(e);
                    }
                    tracing::debug!(job = %self.id, error = %e, "lost the job's stream; reconnecting");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Asks the job to stop; returns the job as the server left it (CANCELLING or final).
    pub async fn cancel(&self, reason: &str) -> Result<ferry_proto::v1::Job> {
        let resp = self
            .ferry
            .transfer()
            .cancel_job(CancelJobRequest {
                job: self.job_ref(),
                reason: reason.into(),
            })
            .await
            .map_err(|s| self.ferry.rpc_error("CancelJob", s))?
            .into_inner();
        resp.job.ok_or_else(|| ClientError::Protocol {
            endpoint: self.ferry.endpoint().into(),
            problem: format!("CancelJob {} answered without the job", self.id),
        })
    }

    /// Ends a warm migration's syncs: the job stops the application on the source,
    /// copies the last change and starts it on the destination. Returns at once, with
    /// the job as the server left it; follow it with [`Job::wait`].
    pub async fn cutover(&self) -> Result<ferry_proto::v1::Job> {
        let resp = self
            .ferry
            .transfer()
            .cutover(CutoverRequest {
                job: self.job_ref(),
            })
            .await
            .map_err(|s| self.ferry.rpc_error("Cutover", s))?
            .into_inner();
        resp.job.ok_or_else(|| ClientError::Protocol {
            endpoint: self.ferry.endpoint().into(),
            problem: format!("Cutover {} answered without the job", self.id),
        })
    }
}
