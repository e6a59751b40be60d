//! Job state in `<data-dir>/transfer.db`: the API's own `Job` and `JobReport` messages
//! (protobuf, so what a client sees is what was stored), the request that started the
//! job, and the runner's checkpoint (JSON) to resume from after a restart.
//!
//! The checkpoint holds every captured object, an application's Secrets included, so it
//! is stored sealed with the data directory's key (`<data-dir>/secret.key`, the one
//! the catalog and pairing services seal with: [`ferry_store::SecretBox`]), bound to its
//! job's id. Rows written in clear by earlier builds still load, and are sealed (and
//! the file compacted, so no clear copy stays in free pages) when the store is opened.
//! The request, job and report hold no secrets (selectors, mappings, profile names, a
//! destination's public key; names and outcomes), so they stay in clear for listings.

use std::path::Path;
use std::sync::Arc;

use ferry_proto::v1::{Job, JobKind, JobReport, JobState};
use ferry_store::rusqlite::types::{Value, ValueRef};
use ferry_store::rusqlite::{self, OptionalExtension, params};
use ferry_store::{SecretBox, Store, StoreError};
use prost::Message;

use crate::error::{Result, TransferError};
use crate::job::Checkpoint;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind INTEGER NOT NULL,
        state INTEGER NOT NULL,
        schedule_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        job BLOB NOT NULL,
        request BLOB NOT NULL,
        report BLOB NOT NULL,
        -- A BLOB sealed with the data directory's key; TEXT (clear JSON) in rows of
        -- builds before sealing, until the store is next opened.
        checkpoint TEXT NOT NULL
    );
    CREATE INDEX jobs_by_created ON jobs (created_ms DESC, id DESC);
    CREATE INDEX jobs_by_state ON jobs (state);",
    // The request id a Start* call gave, so a repeated call finds its jobs.
    "ALTER TABLE jobs ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_by_request ON jobs (request_id) WHERE request_id != '';",
];

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
    /// Seals and opens checkpoints.
    sealer: Arc<SecretBox>,
}

fn created_ms(job: &Job) -> i64 {
    job.created_at
        .as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
        .unwrap_or_default()
}

/// A checkpoint as stored.
enum StoredCheckpoint {
    /// Sealed JSON (this build).
    Sealed(Vec<u8>),
    /// Clear JSON, written by a build before checkpoints were sealed.
    Clear(String),
}

/// A row before its checkpoint is opened (which happens outside the database call).
struct RawRow {
    /// The row's key (the job's id).
    id: String,
    job: Job,
    request: Vec<u8>,
    report: JobReport,
    checkpoint: StoredCheckpoint,
}

fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
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
    let id: String = row.get(4)?;
    let checkpoint = match row.get_ref(3)? {
        ValueRef::Blob(b) => StoredCheckpoint::Sealed(b.to_vec()),
        ValueRef::Text(t) => StoredCheckpoint::Clear(String::from_utf8_lossy(t).into_owned()),
        other => {
            return Err(bad(
                3,
                format!("a checkpoint stored as {:?}", other.data_type()),
            ));
        }
    };
    Ok(RawRow {
        id,
        job: Job::decode(job.as_slice()).map_err(|e| bad(0, e.to_string()))?,
        request,
        report: JobReport::decode(report.as_slice()).map_err(|e| bad(2, e.to_string()))?,
        checkpoint,
    })
}

/// What a sealed checkpoint is bound to: its job, so a sealed value copied into
/// another job's row does not open there.
fn checkpoint_aad(job_id: &str) -> Vec<u8> {
    format!("transfer/job/{job_id}/checkpoint").into_bytes()
}

impl JobStore {
    /// Opens `<data_dir>/transfer.db`, creating it and bringing its schema up to date,
    /// with the data directory's key (`<data_dir>/secret.key`, created on first use);
    /// checkpoints earlier builds left in clear are sealed now.
    pub async fn open(data_dir: &Path) -> Result<JobStore> {
        let dir = data_dir.to_path_buf();
        let sealer = tokio::task::spawn_blocking(move || SecretBox::load_or_create(&dir))
            .await
            .map_err(|e| TransferError::Internal(format!("loading the secret key: {e}")))??;
        let store = Store::open(&data_dir.join("transfer.db"), MIGRATIONS).await?;
        let store = JobStore {
            store,
            sealer: Arc::new(sealer),
        };
        store.seal_clear_checkpoints().await?;
        Ok(store)
    }

    /// An in-memory store, for unit tests, sealing with a random key.
    pub fn in_memory() -> Result<JobStore> {
        let key: [u8; 32] = rand::random();
        Ok(JobStore {
            store: Store::open_in_memory(MIGRATIONS)?,
            sealer: Arc::new(SecretBox::from_key(&key, ":memory:".into())?),
        })
    }

    /// Seals the checkpoint of every row an earlier build wrote in clear, then compacts
    /// the file so the clear copies do not linger in its free pages or its WAL.
    async fn seal_clear_checkpoints(&self) -> Result<()> {
        let clear: Vec<(String, String)> = self
            .store
            .call(|tx| {
                let mut stmt = tx
                    .prepare("SELECT id, checkpoint FROM jobs WHERE typeof(checkpoint) = 'text'")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        if clear.is_empty() {
            return Ok(());
        }
        let count = clear.len();
        let sealed = clear
            .into_iter()
            .map(|(id, json)| {
                let sealed = self.sealer.seal(&checkpoint_aad(&id), json.as_bytes())?;
                Ok((id, sealed))
            })
            .collect::<Result<Vec<_>>>()?;
        self.store
            .call(move |tx| {
                for (id, sealed) in sealed {
                    tx.execute(
                        "UPDATE jobs SET checkpoint = ?2 WHERE id = ?1 AND typeof(checkpoint) = 'text'",
                        params![id, sealed],
                    )?;
                }
                Ok(())
            })
            .await?;
        let path = self.store.path().to_path_buf();
        if path != Path::new(":memory:") {
            // VACUUM cannot run inside the store's transactions: a connection of its own.
            let vacuumed = tokio::task::spawn_blocking(move || {
                let query = |source| StoreError::Query {
                    path: path.clone(),
                    source,
                };
                let conn = rusqlite::Connection::open(&path).map_err(query)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(query)?;
                conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
                    .map_err(query)
            })
            .await
            .map_err(|e| TransferError::Internal(format!("compacting transfer.db: {e}")))?;
            vacuumed?;
        }
        tracing::info!(
            jobs = count,
            "sealed job checkpoints an earlier version stored in clear"
        );
        Ok(())
    }

    /// The checkpoint's JSON, sealed for job `job_id`.
    fn seal_checkpoint(&self, job_id: &str, c: &Checkpoint) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(c).map_err(|e| {
            TransferError::Internal(format!("serializing the checkpoint of job {job_id}: {e}"))
        })?;
        Ok(self.sealer.seal(&checkpoint_aad(job_id), &json)?)
    }

    /// A row with its checkpoint opened.
    fn open_row(&self, raw: RawRow) -> Result<StoredJob> {
        let id = raw.id;
        let checkpoint = match raw.checkpoint {
            StoredCheckpoint::Sealed(sealed) => {
                let json = self.sealer.open(
                    &checkpoint_aad(&id),
                    &sealed,
                    &format!("checkpoint of job {id} in transfer.db"),
                )?;
                serde_json::from_slice(&json)
            }
            StoredCheckpoint::Clear(json) => serde_json::from_str(&json),
        }
        // serde names the field, not its value: no captured data in the message.
        .map_err(|e| {
            TransferError::Internal(format!(
                "the stored checkpoint of job {id} does not parse ({e}); cancel or delete the job"
            ))
        })?;
        Ok(StoredJob {
            job: raw.job,
            request: raw.request,
            report: raw.report,
            checkpoint,
        })
    }

    /// Stores a new job.
    pub async fn insert(&self, j: &StoredJob) -> Result<()> {
        let checkpoint = self.seal_checkpoint(&j.job.id, &j.checkpoint)?;
        let (id, kind, state, schedule, request_id) = (
            j.job.id.clone(),
            j.job.kind,
            j.job.state,
            j.job.schedule_id.clone(),
            j.job.request_id.clone(),
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
                    "INSERT INTO jobs (id, kind, state, schedule_id, created_ms, job, request, report, checkpoint, request_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![id, kind, state, schedule, created, job, request, report, checkpoint, request_id],
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
        let checkpoint = checkpoint
            .map(|c| self.seal_checkpoint(&job.id, c))
            .transpose()?;
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
        self.store
            .call(move |tx| {
                tx.query_row(
                    "SELECT job, request, report, checkpoint, id FROM jobs WHERE id = ?1",
                    [id],
                    decode_row,
                )
                .optional()
            })
            .await?
            .map(|raw| self.open_row(raw))
            .transpose()
    }

    /// The jobs a Start* call with `request_id` made for `requested_by`, oldest first.
    pub async fn by_request(&self, request_id: &str, requested_by: &str) -> Result<Vec<Job>> {
        let key = request_id.to_owned();
        let blobs: Vec<Vec<u8>> = self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT job FROM jobs WHERE request_id = ?1 ORDER BY created_ms, id",
                )?;
                let rows = stmt.query_map([key], |row| row.get(0))?;
                rows.collect()
            })
            .await?;
        let mut jobs = Vec::with_capacity(blobs.len());
        for blob in blobs {
            let job = Job::decode(blob.as_slice())
                .map_err(|e| TransferError::Internal(format!("a stored job: {e}")))?;
            // Another user's key finds nothing of theirs.
            if job.requested_by == requested_by {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// Jobs not in a final state: what a restarted service must resume or end.
    pub async fn unfinished(&self) -> Result<Vec<StoredJob>> {
        let states = [
            JobState::Unspecified as i32,
            JobState::Queued as i32,
            JobState::Running as i32,
            JobState::Cancelling as i32,
        ];
        let raw: Vec<RawRow> = self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT job, request, report, checkpoint, id FROM jobs
                     WHERE state IN (?1, ?2, ?3, ?4) ORDER BY created_ms, id",
                )?;
                let rows = stmt.query_map(
                    params![states[0], states[1], states[2], states[3]],
                    decode_row,
                )?;
                rows.collect()
            })
            .await?;
        raw.into_iter().map(|r| self.open_row(r)).collect()
    }

    /// A page of jobs, newest first, and the token of the next page (empty at the end).
    pub async fn list(&self, q: ListQuery) -> Result<(Vec<Job>, String)> {
        let bad_token = || {
            TransferError::invalid(
                "page_token",
                "not a token this service gave; start again from the first page",
            )
        };
        let page = ferry_store::Page::of(q.page_size, &q.page_token).map_err(|_| bad_token())?;
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
        if let Some(after) = &page.after {
            // Keyset paging: jobs created while a client pages do not shift its pages.
            let (ms, id) = after
                .split_once('/')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(bad_token)?;
            args.push(Value::Integer(ms));
            let a = args.len();
            args.push(Value::Text(id));
            let b = args.len();
            sql.push_str(&format!(
                " AND (created_ms < ?{a} OR (created_ms = ?{a} AND id < ?{b}))"
            ));
        }
        args.push(Value::Integer(page.sql_limit()));
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
        let next = page.finish(&mut jobs, |last| {
            format!("{}/{}", created_ms(last), last.id)
        });
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

    /// transfer.db and its WAL, as bytes.
    fn raw_files(dir: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(dir.join("transfer.db")).expect("transfer.db");
        if let Ok(wal) = std::fs::read(dir.join("transfer.db-wal")) {
            bytes.extend(wal);
        }
        bytes
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[tokio::test]
    async fn checkpoints_are_sealed_and_clear_rows_of_earlier_builds_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        // As an earlier build left it: checkpoints in clear, and an older clear version
        // of one in the file's free pages.
        let old_secret = "legacy-captured-secret-6c1f";
        {
            let old = Store::open(&dir.path().join("transfer.db"), MIGRATIONS)
                .await
                .expect("old store");
            let row = job("old", 100, JobState::Running);
            let big = |marker: &str| {
                serde_json::json!({"attempt": 1, "cancel_reason": marker.repeat(2000)}).to_string()
            };
            let (first, second) = (big(old_secret), big("x"));
            let first = (first.clone(), first);
            let (job, report) = (row.job.encode_to_vec(), row.report.encode_to_vec());
            old.call(move |tx| {
                tx.execute(
                    "INSERT INTO jobs (id, kind, state, schedule_id, created_ms, job, request, report, checkpoint)
                     VALUES ('old', 1, ?4, '', 100, ?1, x'', ?2, ?3)",
                    params![job, report, first.0, JobState::Running as i32],
                )?;
                tx.execute(
                    "INSERT INTO jobs (id, kind, state, schedule_id, created_ms, job, request, report, checkpoint)
                     VALUES ('older', 1, ?4, '', 90, ?1, x'', ?2, ?3)",
                    params![job, report, first.1, JobState::Running as i32],
                )
            })
            .await
            .expect("clear rows");
            // The first version's pages are freed, with their content.
            old.call(move |tx| {
                tx.execute(
                    "UPDATE jobs SET checkpoint = ?1 WHERE id = 'older'",
                    [second],
                )
            })
            .await
            .expect("rewrite");
        }
        assert!(contains(&raw_files(dir.path()), old_secret), "the setup");

        let store = JobStore::open(dir.path()).await.expect("open");
        let old = store.get("old").await.expect("get").expect("present");
        assert_eq!(old.checkpoint.cancel_reason, old_secret.repeat(2000));
        assert_eq!(store.unfinished().await.expect("unfinished").len(), 2);
        assert!(
            !contains(&raw_files(dir.path()), old_secret),
            "a clear checkpoint is left in transfer.db after opening"
        );

        // New checkpoints never reach the file in clear.
        let secret = "captured-secret-value-93ad";
        let mut new = job("new", 200, JobState::Running);
        store.insert(&new).await.expect("insert");
        new.checkpoint.cancel_reason = secret.into();
        store
            .save(&new.job, &new.report, Some(&new.checkpoint))
            .await
            .expect("save");
        assert!(!contains(&raw_files(dir.path()), secret));
        drop(store);
        let store = JobStore::open(dir.path()).await.expect("reopen");
        let got = store.get("new").await.expect("get").expect("present");
        assert_eq!(got.checkpoint.cancel_reason, secret);
        assert!(!contains(&raw_files(dir.path()), secret));

        // A sealed checkpoint is bound to its job.
        store
            .store
            .call(|tx| {
                tx.execute(
                    "UPDATE jobs SET checkpoint = (SELECT checkpoint FROM jobs WHERE id = 'new') \
                     WHERE id = 'old'",
                    [],
                )
            })
            .await
            .expect("copy");
        let err = store
            .get("old")
            .await
            .expect_err("another job's checkpoint");
        assert!(err.to_string().contains("checkpoint of job old"), "{err}");
        assert!(!err.to_string().contains(secret), "{err}");
    }

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
