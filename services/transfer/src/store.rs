//! Job state in `<data-dir>/transfer.db`: the API's own `Job` and `JobReport` messages
//! (protobuf, so what a client sees is what was stored), the request that started the
//! job, and the runner's checkpoint (JSON) to resume from after a restart.

use std::path::Path;

use ferry_proto::v1::{Job, JobKind, JobReport, JobState};
use ferry_store::Store;
use ferry_store::rusqlite::{self, OptionalExtension, params, types::Value};
use prost::Message;

use crate::error::{Result, TransferError};
use crate::job::Checkpoint;

const MIGRATIONS: &[&str] = &["CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind INTEGER NOT NULL,
        state INTEGER NOT NULL,
        schedule_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        job BLOB NOT NULL,
        request BLOB NOT NULL,
        report BLOB NOT NULL,
        checkpoint TEXT NOT NULL
    );
    CREATE INDEX jobs_by_created ON jobs (created_ms DESC, id DESC);
    CREATE INDEX jobs_by_state ON jobs (state);"];

/// Everything stored about one job.
#[derive(Debug, Clone, Default)]
pub struct StoredJob {
    pub job: Job,
    /// The Start* request, protobuf-encoded.
    pub request: Vec<u8>,
    /// The report as it grows; final once the job is.
    pub report: JobReport,
    pub checkpoint: Checkpoint,
}

/// Filter and page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub kinds: Vec<i32>,
    pub states: Vec<i32>,
    pub schedule_id: String,
    pub page_size: u32,
    pub page_token: String,
}

/// The job table.
#[derive(Debug, Clone)]
pub struct JobStore {
    store: Store,
}

fn created_ms(job: &Job) -> i64 {
    job.created_at
        .as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
        .unwrap_or_default()
}

fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredJob> {
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            Box::<dyn std::error::Error + Send + Sync>::from(e),
        )
    };
    let job: Vec<u8> = row.get(0)?;
    let request: Vec<u8> = row.get(1)?;
    let report: Vec<u8> = row.get(2)?;
    let checkpoint: String = row.get(3)?;
    Ok(StoredJob {
        job: Job::decode(job.as_slice()).map_err(|e| bad(0, e.to_string()))?,
        request,
        report: JobReport::decode(report.as_slice()).map_err(|e| bad(2, e.to_string()))?,
        checkpoint: serde_json::from_str(&checkpoint).map_err(|e| bad(3, e.to_string()))?,
    })
}

impl JobStore {
    /// Opens `<data_dir>/transfer.db`, creating it and bringing its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<JobStore> {
        let store = Store::open(&data_dir.join("transfer.db"), MIGRATIONS).await?;
        Ok(JobStore { store })
    }

    /// An in-memory store, for unit tests.
    pub fn in_memory() -> Result<JobStore> {
        Ok(JobStore {
            store: Store::open_in_memory(MIGRATIONS)?,
        })
    }

    fn checkpoint_json(c: &Checkpoint) -> Result<String> {
        serde_json::to_string(c)
            .map_err(|e| TransferError::Internal(format!("serializing a job checkpoint: {e}")))
    }

    /// Stores a new job.
    pub async fn insert(&self, j: &StoredJob) -> Result<()> {
        let checkpoint = Self::checkpoint_json(&j.checkpoint)?;
        let (id, kind, state, schedule) = (
            j.job.id.clone(),
            j.job.kind,
            j.job.state,
            j.job.schedule_id.clone(),
        );
        let (created, job, request, report) = (
            created_ms(&j.job),
            j.job.encode_to_vec(),
            j.request.clone(),
            j.report.encode_to_vec(),
        );
        self.store
            .call(move |tx| {
                tx.execute(
                    "INSERT INTO jobs (id, kind, state, schedule_id, created_ms, job, request, report, checkpoint)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![id, kind, state, schedule, created, job, request, report, checkpoint],
                )
            })
            .await?;
        Ok(())
    }

    /// Saves a job's state and report, and its checkpoint when given (it can be large:
    /// it holds the captured objects, so it is written only when it changed).
    pub async fn save(
        &self,
        job: &Job,
        report: &JobReport,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<()> {
        let checkpoint = checkpoint.map(Self::checkpoint_json).transpose()?;
        let (id, state, job, report) = (
            job.id.clone(),
            job.state,
            job.encode_to_vec(),
            report.encode_to_vec(),
        );
        let changed = self
            .store
            .call(move |tx| match checkpoint {
                Some(c) => tx.execute(
                    "UPDATE jobs SET state = ?2, job = ?3, report = ?4, checkpoint = ?5 WHERE id = ?1",
                    params![id, state, job, report, c],
                ),
                None => tx.execute(
                    "UPDATE jobs SET state = ?2, job = ?3, report = ?4 WHERE id = ?1",
                    params![id, state, job, report],
                ),
            })
            .await?;
        if changed == 0 {
            return Err(TransferError::Internal(
                "saving a job that is not stored".into(),
            ));
        }
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredJob>> {
        let id = id.to_owned();
        Ok(self
            .store
            .call(move |tx| {
                tx.query_row(
                    "SELECT job, request, report, checkpoint FROM jobs WHERE id = ?1",
                    [id],
                    decode_row,
                )
                .optional()
            })
            .await?)
    }

    /// Jobs not in a final state: what a restarted service must resume or end.
    pub async fn unfinished(&self) -> Result<Vec<StoredJob>> {
        let states = [
            JobState::Unspecified as i32,
            JobState::Queued as i32,
            JobState::Running as i32,
            JobState::Cancelling as i32,
        ];
        Ok(self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT job, request, report, checkpoint FROM jobs
                     WHERE state IN (?1, ?2, ?3, ?4) ORDER BY created_ms, id",
                )?;
                let rows = stmt.query_map(
                    params![states[0], states[1], states[2], states[3]],
                    decode_row,
                )?;
                rows.collect()
            })
            .await?)
    }

    /// A page of jobs, newest first, and the token of the next page (empty at the end).
    pub async fn list(&self, q: ListQuery) -> Result<(Vec<Job>, String)> {
        let size = match q.page_size {
            0 => 50,
            n => n.min(500),
        } as i64;
        let mut sql = String::from("SELECT job FROM jobs WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let mut in_list = |sql: &mut String, column: &str, values: &[i32]| {
            if values.is_empty() {
                return;
            }
            let marks: Vec<String> = values
                .iter()
                .map(|v| {
                    args.push(Value::Integer(i64::from(*v)));
                    format!("?{}", args.len())
                })
                .collect();
            sql.push_str(&format!(" AND {column} IN ({})", marks.join(", ")));
        };
        in_list(&mut sql, "kind", &q.kinds);
        in_list(&mut sql, "state", &q.states);
        if !q.schedule_id.is_empty() {
            args.push(Value::Text(q.schedule_id.clone()));
            sql.push_str(&format!(" AND schedule_id = ?{}", args.len()));
        }
        if !q.page_token.is_empty() {
            // Keyset paging: jobs created while a client pages do not shift its pages.
            let (ms, id) = q
                .page_token
                .split_once('/')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| {
                    TransferError::invalid(
                        "page_token",
                        "not a token this service gave; start again from the first page",
                    )
                })?;
            args.push(Value::Integer(ms));
            let a = args.len();
            args.push(Value::Text(id));
            let b = args.len();
            sql.push_str(&format!(
                " AND (created_ms < ?{a} OR (created_ms = ?{a} AND id < ?{b}))"
            ));
        }
        args.push(Value::Integer(size + 1));
        sql.push_str(&format!(
            " ORDER BY created_ms DESC, id DESC LIMIT ?{}",
            args.len()
        ));
        let mut jobs: Vec<Job> = self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                    let blob: Vec<u8> = r.get(0)?;
                    Job::decode(blob.as_slice()).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            0,
                            rusqlite::types::Type::Blob,
                            Box::new(e),
                        )
                    })
                })?;
                rows.collect()
            })
            .await?;
        let mut next = String::new();
        if jobs.len() as i64 > size {
            jobs.truncate(size as usize);
            if let Some(last) = jobs.last() {
                next = format!("{}/{}", created_ms(last), last.id);
            }
        }
        for j in &mut jobs {
            // Listings carry no progress (see ListJobsResponse).
            j.progress = None;
        }
        Ok((jobs, next))
    }
}

/// Whether a job state is final.
pub fn is_final(state: i32) -> bool {
    matches!(
        JobState::try_from(state),
        Ok(JobState::Succeeded
            | JobState::PartiallySucceeded
            | JobState::Failed
            | JobState::Cancelled)
    )
}

/// A kind as stored, for filters.
pub fn kind_name(kind: i32) -> &'static str {
    match JobKind::try_from(kind) {
        Ok(JobKind::Migration) => "migration",
        Ok(JobKind::Export) => "export",
        Ok(JobKind::Import) => "import",
        Ok(JobKind::Restore) => "restore",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, secs: i64, state: JobState) -> StoredJob {
        StoredJob {
            job: Job {
                id: id.into(),
                kind: JobKind::Migration as i32,
                state: state as i32,
                created_at: Some(prost_types::Timestamp {
                    seconds: secs,
                    nanos: 0,
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn jobs_survive_reopening_and_page_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = JobStore::open(dir.path()).await.expect("open");
        for i in 0..5 {
            let state = if i == 3 {
                JobState::Running
            } else {
                JobState::Succeeded
            };
            store
                .insert(&job(&format!("j{i}"), 100 + i, state))
                .await
                .expect("insert");
        }
        let mut j = store.get("j1").await.expect("get").expect("present");
        j.job.state = JobState::Failed as i32;
        j.checkpoint.attempt = 2;
        store
            .save(&j.job, &j.report, Some(&j.checkpoint))
            .await
            .expect("save");
        drop(store);

        let store = JobStore::open(dir.path()).await.expect("reopen");
        let j1 = store.get("j1").await.expect("get").expect("present");
        assert_eq!(j1.job.state, JobState::Failed as i32);
        assert_eq!(j1.checkpoint.attempt, 2);
        let unfinished = store.unfinished().await.expect("unfinished");
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].job.id, "j3");

        let (page, token) = store
            .list(ListQuery {
                page_size: 2,
                ..Default::default()
            })
            .await
            .expect("list");
        let ids: Vec<&str> = page.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["j4", "j3"]);
        let (page, token) = store
            .list(ListQuery {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list");
        let ids: Vec<&str> = page.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["j2", "j1"]);
        let (page, token) = store
            .list(ListQuery {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(page.len(), 1);
        assert!(token.is_empty());
        let (running, _) = store
            .list(ListQuery {
                states: vec![JobState::Running as i32],
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(running.len(), 1);
        assert!(
            store
                .list(ListQuery {
                    page_token: "garbage".into(),
                    ..Default::default()
                })
                .await
                .is_err()
        );
    }
}
