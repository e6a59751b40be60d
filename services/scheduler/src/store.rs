//! Schedules and runs in `<data-dir>/scheduler.db`. Each row keeps the API's own message
//! (protobuf), so what a client sees is what was stored; the columns beside it are what
//! queries filter and order on. Checks that must not race (a name is free; no run of the
//! schedule is going) run in the same transaction as the write they guard.

use std::collections::HashMap;
use std::path::Path;

use ferry_proto::v1::{RunState, Schedule, ScheduleRun};
use ferry_store::Store;
use ferry_store::rusqlite::{self, OptionalExtension, params};
use prost::Message;

use crate::error::{Result, SchedulerError};

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        suspended INTEGER NOT NULL,
        -- NULL while suspended (or when a cron expression has no next date).
        next_run_ms INTEGER,
        -- The Schedule message without its state: id, name, trigger, spec, policies.
        definition BLOB NOT NULL
    );
    CREATE INDEX schedules_due ON schedules (suspended, next_run_ms);
    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        state INTEGER NOT NULL,
        run BLOB NOT NULL
    );
    CREATE INDEX runs_by_schedule ON runs (schedule_id, seq);
    CREATE INDEX runs_by_state ON runs (state);",
    // v2. What each import policy imported: a restore point is DONE once imported (and, if
    // the policy restores, restored); RESTORING while its restore job (job_id) is going, so
    // a restarted scheduler waits on that job rather than starting another.
    "CREATE TABLE imports (
        schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        restore_point_id TEXT NOT NULL,
        state INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (schedule_id, restore_point_id)
    );",
];

/// Where an import policy is with one restore point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Import {
    /// Its restore job is going (or was, when the scheduler stopped).
    Restoring { job_id: String },
    /// Imported (and restored, if the policy restores): never again.
    Done,
}

const IMPORT_RESTORING: i64 = 1;
const IMPORT_DONE: i64 = 2;

/// A stored schedule: its definition and its timing state.
#[derive(Debug, Clone)]
pub(crate) struct StoredSchedule {
    pub definition: Schedule,
    pub suspended: bool,
    pub next_run_ms: Option<i64>,
}

/// What firing a due schedule did.
#[derive(Debug)]
pub(crate) enum Fired {
    /// A run was recorded RUNNING: start its job.
    Started(ScheduleRun),
    /// The previous run is still going: a SKIPPED run was recorded.
    Skipped(ScheduleRun),
    /// The schedule was suspended, changed or deleted since it was read.
    Gone,
}

/// What asking for a manual run did.
#[derive(Debug)]
pub(crate) enum Manual {
    Started(ScheduleRun),
    /// This run is going; nothing was recorded.
    Busy(ScheduleRun),
    Gone,
}

fn corrupt(column: usize, e: prost::DecodeError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Blob, Box::new(e))
}

fn decode<M: Message + Default>(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<M> {
    let blob: Vec<u8> = row.get(column)?;
    M::decode(blob.as_slice()).map_err(|e| corrupt(column, e))
}

const SCHEDULE_COLUMNS: &str = "definition, suspended, next_run_ms";

fn schedule_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSchedule> {
    Ok(StoredSchedule {
        definition: decode(row, 0)?,
        suspended: row.get(1)?,
        next_run_ms: row.get(2)?,
    })
}

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRun> {
    decode(row, 0)
}

/// The schedule's run that is still going, if any.
fn running(
    tx: &rusqlite::Transaction<'_>,
    schedule_id: &str,
) -> rusqlite::Result<Option<ScheduleRun>> {
    tx.query_row(
        "SELECT run FROM runs WHERE schedule_id = ?1 AND state = ?2 ORDER BY seq DESC LIMIT 1",
        params![schedule_id, RunState::Running as i32],
        run_row,
    )
    .optional()
}

fn insert_run(tx: &rusqlite::Transaction<'_>, run: &ScheduleRun) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO runs (id, schedule_id, state, run) VALUES (?1, ?2, ?3, ?4)",
        params![run.id, run.schedule_id, run.state, run.encode_to_vec()],
    )?;
    Ok(())
}

/// The schedule and run tables.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleStore {
    store: Store,
}

/// The page a request asks for ([`ferry_store::Page`], as every service pages).
fn page(size: u32, token: &str) -> Result<ferry_store::Page> {
    ferry_store::Page::of(size, token).map_err(|_| bad_token())
}

fn bad_token() -> SchedulerError {
    SchedulerError::invalid(
        "page_token",
        "not a page token this listing returned",
        "pass next_page_token unchanged, or leave it empty for the first page",
    )
}

impl ScheduleStore {
    /// Opens `<data_dir>/scheduler.db`, creating it and bringing its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<ScheduleStore> {
        let store = Store::open(&data_dir.join("scheduler.db"), MIGRATIONS).await?;
        Ok(ScheduleStore { store })
    }

    /// Stores a new schedule; false if its name is taken.
    pub async fn insert(&self, s: &StoredSchedule) -> Result<bool> {
        let d = &s.definition;
        let (id, name, blob) = (d.id.clone(), d.name.clone(), d.encode_to_vec());
        let (suspended, next) = (s.suspended, s.next_run_ms);
        Ok(self
            .store
            .call(move |tx| {
                let taken = tx
                    .query_row("SELECT 1 FROM schedules WHERE name = ?1", [&name], |_| {
                        Ok(())
                    })
                    .optional()?
                    .is_some();
                if !taken {
                    tx.execute(
                        "INSERT INTO schedules (id, name, suspended, next_run_ms, definition)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![id, name, suspended, next, blob],
                    )?;
                }
                Ok(!taken)
            })
            .await?)
    }

    /// A schedule by id, else by name.
    pub async fn find(&self, key: &str) -> Result<Option<StoredSchedule>> {
        let key = key.to_owned();
        Ok(self
            .store
            .call(move |tx| {
                for column in ["id", "name"] {
                    let found = tx
                        .query_row(
                            &format!(
                                "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE {column} = ?1"
                            ),
                            [&key],
                            schedule_row,
                        )
                        .optional()?;
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                Ok(None)
            })
            .await?)
    }

    /// A page of schedules ordered by name, and the next page's token (empty at the end).
    pub async fn list(&self, size: u32, token: &str) -> Result<(Vec<StoredSchedule>, String)> {
        let page = page(size, token)?;
        let (after, limit) = (page.after.clone().unwrap_or_default(), page.sql_limit());
        let mut rows: Vec<StoredSchedule> = self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name > ?1
                     ORDER BY name LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params![after, limit], schedule_row)?;
                rows.collect()
            })
            .await?;
        // Keyset paging on the unique name: schedules created meanwhile shift nothing.
        let next = page.finish(&mut rows, |s| s.definition.name.clone());
        Ok((rows, next))
    }

    /// Suspends (no next run) or resumes (from `next_run_ms`) a schedule.
    pub async fn set_suspended(
        &self,
        id: &str,
        suspended: bool,
        next_run_ms: Option<i64>,
    ) -> Result<()> {
        let id = id.to_owned();
        self.store
            .call(move |tx| {
                tx.execute(
                    "UPDATE schedules SET suspended = ?2, next_run_ms = ?3 WHERE id = ?1",
                    params![id, suspended, next_run_ms],
                )
            })
            .await?;
        Ok(())
    }

    /// Removes a schedule and its runs; false if it was not there.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        let n = self
            .store
            .call(move |tx| tx.execute("DELETE FROM schedules WHERE id = ?1", [id]))
            .await?;
        Ok(n > 0)
    }

    /// Active schedules due at `now_ms`, earliest first.
    pub async fn due(&self, now_ms: i64) -> Result<Vec<StoredSchedule>> {
        Ok(self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules
                     WHERE suspended = 0 AND next_run_ms IS NOT NULL AND next_run_ms <= ?1
                     ORDER BY next_run_ms"
                ))?;
                let rows = stmt.query_map([now_ms], schedule_row)?;
                rows.collect()
            })
            .await?)
    }

    /// Records a due run of a schedule still active and still due at `due_ms` (RUNNING,
    /// or SKIPPED when the previous run is going) and moves the schedule to `next_ms`.
    pub async fn fire(
        &self,
        mut run: ScheduleRun,
        due_ms: i64,
        next_ms: Option<i64>,
    ) -> Result<Fired> {
        Ok(self
            .store
            .call(move |tx| {
                let current: Option<(bool, Option<i64>)> = tx
                    .query_row(
                        "SELECT suspended, next_run_ms FROM schedules WHERE id = ?1",
                        [&run.schedule_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if current != Some((false, Some(due_ms))) {
                    return Ok(Fired::Gone);
                }
                tx.execute(
                    "UPDATE schedules SET next_run_ms = ?2 WHERE id = ?1",
                    params![run.schedule_id, next_ms],
                )?;
                let busy = running(tx, &run.schedule_id)?.is_some();
                if busy {
                    run.state = RunState::Skipped as i32;
                    run.finished_at = run.scheduled_at;
                }
                insert_run(tx, &run)?;
                Ok(if busy {
                    Fired::Skipped(run)
                } else {
                    Fired::Started(run)
                })
            })
            .await?)
    }

    /// Records a manual run unless one of the schedule's runs is going.
    pub async fn start_manual(&self, run: ScheduleRun) -> Result<Manual> {
        Ok(self
            .store
            .call(move |tx| {
                let exists = tx
                    .query_row(
                        "SELECT 1 FROM schedules WHERE id = ?1",
                        [&run.schedule_id],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !exists {
                    return Ok(Manual::Gone);
                }
                if let Some(going) = running(tx, &run.schedule_id)? {
                    return Ok(Manual::Busy(going));
                }
                insert_run(tx, &run)?;
                Ok(Manual::Started(run))
            })
            .await?)
    }

    /// Saves a run's progress; false if it is gone (its schedule was deleted).
    pub async fn save_run(&self, run: &ScheduleRun) -> Result<bool> {
        let (id, state, blob) = (run.id.clone(), run.state, run.encode_to_vec());
        let n = self
            .store
            .call(move |tx| {
                tx.execute(
                    "UPDATE runs SET state = ?2, run = ?3 WHERE id = ?1",
                    params![id, state, blob],
                )
            })
            .await?;
        Ok(n > 0)
    }

    /// What the import policy `schedule_id` imported or is restoring, by restore point id.
    pub async fn imports(&self, schedule_id: &str) -> Result<HashMap<String, Import>> {
        let schedule_id = schedule_id.to_owned();
        let rows: Vec<(String, i64, String)> = self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT restore_point_id, state, job_id FROM imports WHERE schedule_id = ?1",
                )?;
                let rows =
                    stmt.query_map([schedule_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, state, job_id)| match state {
                IMPORT_DONE => Some((id, Import::Done)),
                IMPORT_RESTORING => Some((id, Import::Restoring { job_id })),
                _ => None,
            })
            .collect())
    }

    /// Records where the import policy is with restore points `ids` (`None`: forget them,
    /// a failed restore to try again); false when the schedule is gone.
    pub async fn set_imports(
        &self,
        schedule_id: &str,
        run_id: &str,
        ids: Vec<String>,
        import: Option<Import>,
        now_ms: i64,
    ) -> Result<bool> {
        let (schedule_id, run_id) = (schedule_id.to_owned(), run_id.to_owned());
        Ok(self
            .store
            .call(move |tx| {
                let exists = tx
                    .query_row("SELECT 1 FROM schedules WHERE id = ?1", [&schedule_id], |_| {
                        Ok(())
                    })
                    .optional()?
                    .is_some();
                if !exists {
                    return Ok(false);
                }
                for id in &ids {
                    match &import {
                        None => {
                            tx.execute(
                                "DELETE FROM imports WHERE schedule_id = ?1 AND restore_point_id = ?2",
                                params![schedule_id, id],
                            )?;
                        }
                        Some(i) => {
                            let (state, job_id) = match i {
                                Import::Restoring { job_id } => (IMPORT_RESTORING, job_id.as_str()),
                                Import::Done => (IMPORT_DONE, ""),
                            };
                            tx.execute(
                                "INSERT OR REPLACE INTO imports
                                    (schedule_id, restore_point_id, state, job_id, run_id, updated_ms)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                params![schedule_id, id, state, job_id, run_id, now_ms],
                            )?;
                        }
                    }
                }
                Ok(true)
            })
            .await?)
    }

    /// The schedule's newest run.
    pub async fn last_run(&self, schedule_id: &str) -> Result<Option<ScheduleRun>> {
        let (runs, _) = self.runs(schedule_id, 1, "").await?;
        Ok(runs.into_iter().next())
    }

    /// Each schedule's name and its newest successful run (succeeded, or an import
    /// that found nothing to do), for the metrics a restarted scheduler exports.
    pub async fn last_successes(&self) -> Result<Vec<(String, ScheduleRun)>> {
        Ok(self
            .store
            .call(|tx| {
                let mut stmt = tx.prepare(
                    "SELECT s.name, r.run FROM schedules s JOIN runs r ON r.seq = (
                         SELECT MAX(seq) FROM runs WHERE schedule_id = s.id AND state IN (?1, ?2)
                     )",
                )?;
                let rows = stmt.query_map(
                    [RunState::Succeeded as i32, RunState::NothingToDo as i32],
                    |row| Ok((row.get::<_, String>(0)?, decode(row, 1)?)),
                )?;
                rows.collect()
            })
            .await?)
    }

    /// Runs left RUNNING, oldest first: what a restarted scheduler must resume.
    pub async fn running_runs(&self) -> Result<Vec<ScheduleRun>> {
        Ok(self
            .store
            .call(|tx| {
                let mut stmt = tx.prepare("SELECT run FROM runs WHERE state = ?1 ORDER BY seq")?;
                let rows = stmt.query_map([RunState::Running as i32], run_row)?;
                rows.collect()
            })
            .await?)
    }

    /// A page of a schedule's runs, newest first, and the next page's token.
    pub async fn runs(
        &self,
        schedule_id: &str,
        size: u32,
        token: &str,
    ) -> Result<(Vec<ScheduleRun>, String)> {
        let page = page(size, token)?;
        let before: i64 = match &page.after {
            None => i64::MAX,
            Some(seq) => seq.parse().map_err(|_| bad_token())?,
        };
        let limit = page.sql_limit();
        let schedule_id = schedule_id.to_owned();
        let mut rows: Vec<(i64, ScheduleRun)> = self
            .store
            .call(move |tx| {
                let mut stmt = tx.prepare(
                    "SELECT run, seq FROM runs WHERE schedule_id = ?1 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![schedule_id, before, limit], |r| {
                    Ok((r.get(1)?, run_row(r)?))
                })?;
                rows.collect()
            })
            .await?;
        let next = page.finish(&mut rows, |(seq, _)| seq.to_string());
        Ok((rows.into_iter().map(|(_, r)| r).collect(), next))
    }
}
