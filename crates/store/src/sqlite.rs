//! [`RunStore`] on an SQLite file, through sqlx.
//!
//! WAL journal plus a generous busy timeout lets several processes (two
//! `switchyard run`s, a `runs cancel`) share the file; every write is a single
//! statement or a transaction that writes first, so SQLite never has to upgrade
//! a reader to a writer (which fails immediately instead of waiting).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::{
    CacheEntry, Result, RunRecord, RunStore, RunUpdate, State, StoreError, TaskRecord, Transition,
};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_jobs.sql")),
    (3, include_str!("../migrations/0003_catalog.sql")),
];

/// The embedded store: one SQLite database file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

pub(crate) fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(s: Option<String>, what: &str) -> Result<Option<DateTime<Utc>>> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| StoreError::Corrupt {
                what: what.to_string(),
                message: e.to_string(),
            })
    })
    .transpose()
}

pub(crate) fn parse_json(s: Option<String>, what: &str) -> Result<Option<Value>> {
    s.map(|s| {
        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
            what: what.to_string(),
            message: e.to_string(),
        })
    })
    .transpose()
}

pub(crate) fn parse_state(s: &str, what: &str) -> Result<State> {
    State::from_str(s).map_err(|message| StoreError::Corrupt {
        what: what.to_string(),
        message,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(q("migrate"))?;
        for (version, sql) in MIGRATIONS {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(q("migrate"))?;
            if applied.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await.map_err(q("migrate"))?;
            sqlx::query(
                "INSERT OR IGNORE INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            )
            .bind(version)
            .bind(ts(&Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(q("migrate"))?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(q("migrate"))?;
            tx.commit().await.map_err(q("migrate"))?;
        }
        Ok(())
    }

    fn run_from_row(row: &SqliteRow) -> Result<RunRecord> {
        let id: String = row.get("id");
        let what = format!("run {id}");
        Ok(RunRecord {
            pipeline_name: row.get("pipeline_name"),
            display_name: row.get("display_name"),
            state: parse_state(row.get::<&str, _>("state"), &what)?,
            spec: row.get("spec"),
            parameters: parse_json(Some(row.get("parameters")), &what)?.unwrap_or(Value::Null),
            pipeline_root: row.get("pipeline_root"),
            options: parse_json(Some(row.get("options")), &what)?.unwrap_or(Value::Null),
            outputs: parse_json(row.get("outputs"), &what)?,
            error: row.get("error"),
            owner_pid: row.get::<Option<i64>, _>("owner_pid").map(|p| p as u32),
            created_at: parse_ts(Some(row.get("created_at")), &what)?.unwrap_or_else(Utc::now),
            started_at: parse_ts(row.get("started_at"), &what)?,
            finished_at: parse_ts(row.get("finished_at"), &what)?,
            id,
        })
    }

    fn task_from_row(row: &SqliteRow) -> Result<TaskRecord> {
        let key: String = row.get("task_key");
        let what = format!("task {key}");
        Ok(TaskRecord {
            run_id: row.get("run_id"),
            name: row.get("name"),
            parent_key: row.get("parent_key"),
            kind: row.get("kind"),
            state: parse_state(row.get::<&str, _>("state"), &what)?,
            attempt: row.get::<i64, _>("attempt") as u32,
            cached: row.get::<i64, _>("cached") != 0,
            inputs: parse_json(row.get("inputs"), &what)?,
            outputs: parse_json(row.get("outputs"), &what)?,
            log_path: row.get("log_path"),
            error: row.get("error"),
            fingerprint: row.get("fingerprint"),
            started_at: parse_ts(row.get("started_at"), &what)?,
            finished_at: parse_ts(row.get("finished_at"), &what)?,
            task_key: key,
        })
    }

    async fn resolve_id(&self, id: &str) -> Result<String> {
        let exact: Option<String> = sqlx::query_scalar("SELECT id FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("get run"))?;
        if let Some(id) = exact {
            return Ok(id);
        }
        if id.is_empty() || id.contains(['%', '_']) {
            return Err(StoreError::RunNotFound(id.to_string()));
        }
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM runs WHERE id LIKE ? LIMIT 2")
            .bind(format!("{id}%"))
            .fetch_all(&self.pool)
            .await
            .map_err(q("get run"))?;
        match ids.len() {
            0 => Err(StoreError::RunNotFound(id.to_string())),
            1 => Ok(ids.into_iter().next().unwrap_or_default()),
            _ => Err(StoreError::Ambiguous(id.to_string())),
        }
    }
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

#[async_trait::async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(q("create run"))?;
        sqlx::query(
            "INSERT INTO runs (id, pipeline_name, display_name, state, spec, parameters, pipeline_root, options, \
             outputs, error, owner_pid, created_at, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        )
        .bind(&run.id)
        .bind(&run.pipeline_name)
        .bind(&run.display_name)
        .bind(run.state.as_str())
        .bind(&run.spec)
        .bind(run.parameters.to_string())
        .bind(&run.pipeline_root)
        .bind(run.options.to_string())
        .bind(json_text(&run.outputs))
        .bind(&run.error)
        .bind(run.owner_pid.map(i64::from))
        .bind(ts(&run.created_at))
        .bind(run.started_at.as_ref().map(ts))
        .bind(run.finished_at.as_ref().map(ts))
        .execute(&mut *tx)
        .await
        .map_err(q("create run"))?;
        sqlx::query("INSERT INTO transitions (run_id, task_key, state, at) VALUES (?, NULL, ?, ?)")
            .bind(&run.id)
            .bind(run.state.as_str())
            .bind(ts(&run.created_at))
            .execute(&mut *tx)
            .await
            .map_err(q("create run"))?;
        tx.commit().await.map_err(q("create run"))
    }

    async fn get_run(&self, id: &str) -> Result<RunRecord> {
        let id = self.resolve_id(id).await?;
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(&id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("get run"))?
            .ok_or_else(|| StoreError::RunNotFound(id.clone()))?;
        Self::run_from_row(&row)
    }

    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(q("list runs"))?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn transition_run(
        &self,
        id: &str,
        from: &[State],
        to: State,
        update: RunUpdate,
    ) -> Result<bool> {
        let now = Utc::now();
        let guard: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let guard_json = serde_json::to_string(&guard).unwrap_or_else(|_| "[]".into());
        let mut tx = self.pool.begin().await.map_err(q("update run"))?;
        let res = sqlx::query(
            "UPDATE runs SET state = ?1, \
               outputs = COALESCE(?2, CASE WHEN ?7 THEN NULL ELSE outputs END), \
               error = COALESCE(?3, CASE WHEN ?7 THEN NULL ELSE error END), \
               started_at = COALESCE(?4, started_at), \
               finished_at = COALESCE(?5, CASE WHEN ?7 THEN NULL ELSE finished_at END), \
               cancel_requested = CASE WHEN ?7 THEN 0 ELSE cancel_requested END \
             WHERE id = ?6 AND (json_array_length(?8) = 0 OR state IN (SELECT value FROM json_each(?8)))",
        )
        .bind(to.as_str())
        .bind(json_text(&update.outputs))
        .bind(&update.error)
        .bind(update.started_at.as_ref().map(ts))
        .bind(update.finished_at.as_ref().map(ts))
        .bind(id)
        .bind(update.reset)
        .bind(&guard_json)
        .execute(&mut *tx)
        .await
        .map_err(q("update run"))?;
        if res.rows_affected() == 0 {
            tx.rollback().await.map_err(q("update run"))?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO transitions (run_id, task_key, state, at) VALUES (?, NULL, ?, ?)")
            .bind(id)
            .bind(to.as_str())
            .bind(ts(&now))
            .execute(&mut *tx)
            .await
            .map_err(q("update run"))?;
        tx.commit().await.map_err(q("update run"))?;
        Ok(true)
    }

    async fn claim_run(
        &self,
        id: &str,
        from: &[State],
        observed_owner: Option<u32>,
        owner: u32,
        to: State,
        update: RunUpdate,
    ) -> Result<bool> {
        let guard: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let guard_json = serde_json::to_string(&guard).unwrap_or_else(|_| "[]".into());
        let mut tx = self.pool.begin().await.map_err(q("claim run"))?;
        let res = sqlx::query(
            "UPDATE runs SET state = ?1, owner_pid = ?2, started_at = COALESCE(?3, started_at), \
               error = CASE WHEN ?4 THEN NULL ELSE error END, \
               finished_at = CASE WHEN ?4 THEN NULL ELSE finished_at END, \
               cancel_requested = CASE WHEN ?4 THEN 0 ELSE cancel_requested END \
             WHERE id = ?5 AND owner_pid IS ?6 AND state IN (SELECT value FROM json_each(?7))",
        )
        .bind(to.as_str())
        .bind(i64::from(owner))
        .bind(update.started_at.as_ref().map(ts))
        .bind(update.reset)
        .bind(id)
        .bind(observed_owner.map(i64::from))
        .bind(&guard_json)
        .execute(&mut *tx)
        .await
        .map_err(q("claim run"))?;
        if res.rows_affected() == 0 {
            tx.rollback().await.map_err(q("claim run"))?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO transitions (run_id, task_key, state, at) VALUES (?, NULL, ?, ?)")
            .bind(id)
            .bind(to.as_str())
            .bind(ts(&Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(q("claim run"))?;
        tx.commit().await.map_err(q("claim run"))?;
        Ok(true)
    }

    async fn set_owner(&self, id: &str, pid: Option<u32>) -> Result<()> {
        sqlx::query("UPDATE runs SET owner_pid = ? WHERE id = ?")
            .bind(pid.map(i64::from))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("set run owner"))?;
        Ok(())
    }

    async fn request_cancel(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("request cancel"))?;
        Ok(())
    }

    async fn cancel_requested(&self, id: &str) -> Result<bool> {
        let v: Option<i64> = sqlx::query_scalar("SELECT cancel_requested FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read cancel flag"))?;
        Ok(v.unwrap_or(0) != 0)
    }

    async fn put_task(&self, t: &TaskRecord) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(q("write task"))?;
        // Write first (takes the write lock), then compare with the old state.
        let old: Option<String> = sqlx::query_scalar(
            "INSERT INTO tasks (run_id, task_key, name, parent_key, kind, state, attempt, cached, inputs, outputs, \
               log_path, error, fingerprint, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) \
             ON CONFLICT (run_id, task_key) DO UPDATE SET name = excluded.name, parent_key = excluded.parent_key, \
               kind = excluded.kind, state = excluded.state, attempt = excluded.attempt, cached = excluded.cached, \
               inputs = excluded.inputs, outputs = excluded.outputs, log_path = excluded.log_path, \
               error = excluded.error, fingerprint = excluded.fingerprint, started_at = excluded.started_at, \
               finished_at = excluded.finished_at \
             RETURNING (SELECT state FROM transitions WHERE run_id = ? AND task_key = ? ORDER BY seq DESC LIMIT 1)",
        )
        .bind(&t.run_id)
        .bind(&t.task_key)
        .bind(&t.name)
        .bind(&t.parent_key)
        .bind(&t.kind)
        .bind(t.state.as_str())
        .bind(i64::from(t.attempt))
        .bind(i64::from(t.cached))
        .bind(json_text(&t.inputs))
        .bind(json_text(&t.outputs))
        .bind(&t.log_path)
        .bind(&t.error)
        .bind(&t.fingerprint)
        .bind(t.started_at.as_ref().map(ts))
        .bind(t.finished_at.as_ref().map(ts))
        .bind(&t.run_id)
        .bind(&t.task_key)
        .fetch_one(&mut *tx)
        .await
        .map_err(q("write task"))?;
        if old.as_deref() != Some(t.state.as_str()) {
            sqlx::query(
                "INSERT INTO transitions (run_id, task_key, state, at) VALUES (?, ?, ?, ?)",
            )
            .bind(&t.run_id)
            .bind(&t.task_key)
            .bind(t.state.as_str())
            .bind(ts(&Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(q("write task"))?;
        }
        tx.commit().await.map_err(q("write task"))
    }

    async fn get_task(&self, run_id: &str, task_key: &str) -> Result<Option<TaskRecord>> {
        let row = sqlx::query("SELECT * FROM tasks WHERE run_id = ? AND task_key = ?")
            .bind(run_id)
            .bind(task_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("get task"))?;
        row.as_ref().map(Self::task_from_row).transpose()
    }

    async fn list_tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query("SELECT * FROM tasks WHERE run_id = ? ORDER BY COALESCE(started_at, finished_at), task_key")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("list tasks"))?;
        rows.iter().map(Self::task_from_row).collect()
    }

    async fn transitions(&self, run_id: &str) -> Result<Vec<Transition>> {
        let rows = sqlx::query(
            "SELECT task_key, state, at FROM transitions WHERE run_id = ? ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("list transitions"))?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    task_key: r.get("task_key"),
                    state: parse_state(r.get::<&str, _>("state"), "transition")?,
                    at: parse_ts(Some(r.get("at")), "transition")?.unwrap_or_else(Utc::now),
                })
            })
            .collect()
    }

    async fn get_cache(&self, fingerprint: &str) -> Result<Option<CacheEntry>> {
        let row = sqlx::query("SELECT * FROM cache_entries WHERE fingerprint = ?")
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read cache"))?;
        row.map(|r| {
            Ok(CacheEntry {
                fingerprint: r.get("fingerprint"),
                outputs: parse_json(Some(r.get("outputs")), "cache entry")?.unwrap_or(Value::Null),
                run_id: r.get("run_id"),
                task_key: r.get("task_key"),
                created_at: parse_ts(Some(r.get("created_at")), "cache entry")?
                    .unwrap_or_else(Utc::now),
            })
        })
        .transpose()
    }

    async fn put_cache(&self, e: &CacheEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO cache_entries (fingerprint, outputs, run_id, task_key, created_at) VALUES (?,?,?,?,?) \
             ON CONFLICT (fingerprint) DO UPDATE SET outputs = excluded.outputs, run_id = excluded.run_id, \
             task_key = excluded.task_key, created_at = excluded.created_at",
        )
        .bind(&e.fingerprint)
        .bind(e.outputs.to_string())
        .bind(&e.run_id)
        .bind(&e.task_key)
        .bind(ts(&e.created_at))
        .execute(&self.pool)
        .await
        .map_err(q("write cache"))?;
        Ok(())
    }
}
