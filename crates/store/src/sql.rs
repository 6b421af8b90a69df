//! The stores on a SQL database through sqlx's `Any` driver: an SQLite file
//! (the default, embedded) or a PostgreSQL server (shared by several servers),
//! with one set of queries (`$n` placeholders, portable SQL) and numbered
//! migrations per database.
//!
//! SQLite runs in WAL mode with a generous busy timeout so several processes
//! (two `switchyard run`s, a `runs cancel`) share the file; every write is a
//! single statement or a transaction that writes first, so SQLite never has to
//! upgrade a reader to a writer (which fails immediately instead of waiting).

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::{
    CacheEntry, Lease, Result, RunRecord, RunStore, RunUpdate, State, StoreError, TaskRecord,
    Transition,
};

/// Which database a store talks to; the SQL differs only in migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_jobs.sql")),
    (3, include_str!("../migrations/sqlite/0003_catalog.sql")),
    (
        4,
        include_str!("../migrations/sqlite/0004_job_observations.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_transitions_task.sql"),
    ),
    (6, include_str!("../migrations/sqlite/0006_leases.sql")),
    (
        7,
        include_str!("../migrations/sqlite/0007_recurring_runs.sql"),
    ),
    (8, include_str!("../migrations/sqlite/0008_job_task.sql")),
    (9, include_str!("../migrations/sqlite/0009_kfp_fields.sql")),
    (10, include_str!("../migrations/sqlite/0010_job_kpi.sql")),
];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_jobs.sql")),
    (3, include_str!("../migrations/postgres/0003_catalog.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_job_observations.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_transitions_task.sql"),
    ),
    (6, include_str!("../migrations/postgres/0006_leases.sql")),
    (
        7,
        include_str!("../migrations/postgres/0007_recurring_runs.sql"),
    ),
    (8, include_str!("../migrations/postgres/0008_job_task.sql")),
    (
        9,
        include_str!("../migrations/postgres/0009_kfp_fields.sql"),
    ),
    (10, include_str!("../migrations/postgres/0010_job_kpi.sql")),
];

/// The error of an insert: `AlreadyExists` (naming the `kind` and `name`)
/// when the key exists, else the query's error for `op`.
pub(crate) fn insert_error<'a>(
    op: &'static str,
    kind: &'static str,
    name: &'a str,
) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::AlreadyExists {
            kind,
            name: name.to_string(),
        },
        _ => StoreError::Query { op, source: e },
    }
}

/// A run's columns for listings (table alias `r`): all but the spec, which is
/// large (every step of the pipeline) and which no listing shows; `spec` is
/// then empty. `get_run` reads it.
pub(crate) const RUN_LIST_COLUMNS: &str = "r.id, r.pipeline_name, r.display_name, r.state, '' AS spec, \
    r.parameters, r.pipeline_root, r.options, r.outputs, r.error, r.owner_pid, r.owner_id, r.owner_host, r.lease_until, r.created_at, r.started_at, r.finished_at";

/// The store: runs, tasks, jobs, catalog and cache on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
}

/// `$from, $from+1, …` for `n` values: a portable `IN (…)` list.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        if matches!(source, sqlx::Error::Database(_)) {
            DATABASE_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        StoreError::Query { op, source }
    }
}

/// Database errors seen by this process: once there has been one, released
/// SQLite connections are checked for a transaction it left open.
static DATABASE_ERRORS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds a lease's four columns, in this order: `owner_pid`, `owner_id`,
/// `owner_host`, `lease_until` (all NULL without a lease).
pub(crate) fn bind_lease<'q>(query: AnyQuery<'q>, lease: Option<&Lease>) -> AnyQuery<'q> {
    query
        .bind(lease.map(|l| i64::from(l.pid)))
        .bind(lease.map(|l| l.owner.clone()))
        .bind(lease.map(|l| l.host.clone()))
        .bind(lease.map(Lease::until_ms))
}

/// The lease columns of a run or job row; `None` when no process owns it
/// (rows written before leases existed count as unowned).
pub(crate) fn lease_from_row(row: &AnyRow) -> Option<Lease> {
    Some(Lease {
        owner: row.get::<Option<String>, _>("owner_id")?,
        host: row
            .get::<Option<String>, _>("owner_host")
            .unwrap_or_default(),
        pid: row
            .get::<Option<i64>, _>("owner_pid")
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        until: DateTime::from_timestamp_millis(row.get::<Option<i64>, _>("lease_until")?)?,
    })
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

impl SqlStore {
    /// Opens (creating if needed) an SQLite database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect_url(&url, path.display().to_string()).await
    }

    /// Connects to `postgres://…` (or `sqlite://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = match url.split_once('@') {
            // Never print a password.
            Some((_, host)) => format!(
                "{}…@{host}",
                &url[..url.find("://").map(|i| i + 3).unwrap_or(0)]
            ),
            None => url.to_string(),
        };
        Self::connect_url(url, shown).await
    }

    async fn connect_url(url: &str, shown: String) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(StoreError::Open {
                path: shown,
                source: sqlx::Error::Configuration(
                    "use sqlite://PATH or postgres://USER@HOST/DB".into(),
                ),
            });
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 4 } else { 10 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            // A COMMIT that failed (a full disk: SQLITE_FULL) leaves SQLite's
            // transaction open on the connection; back in the pool, later
            // writes on it wait on "database is locked" until restart. After
            // any database error, end such a transaction before a connection
            // is reused (an error here just means none was open). Not before
            // one: the extra statement costs ~20% on many small writes.
            .after_release(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite
                        && DATABASE_ERRORS.load(std::sync::atomic::Ordering::Relaxed) > 0
                    {
                        let _ = conn.execute("ROLLBACK").await;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .map_err(|source| StoreError::Open {
                path: shown,
                source,
            })?;
        let store = SqlStore { pool, dialect };
        store.migrate().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// What an owner-fenced write appends to its `EXISTS (SELECT … owner_id
    /// = …)`: on PostgreSQL a share lock on the owning row, so a take-over
    /// committing meanwhile is waited for and then seen (READ COMMITTED
    /// re-reads a locked row), and a take-over waits for the write. SQLite's
    /// write lock, taken first, already orders them.
    pub(crate) fn share_lock(&self) -> &'static str {
        if self.dialect == Dialect::Postgres {
            " FOR SHARE"
        } else {
            ""
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(q("migrate"))?;
        if self.dialect == Dialect::Postgres {
            // Two servers starting at once must not both create the schema.
            sqlx::query("SELECT pg_advisory_lock(74612026)")
                .execute(&mut *conn)
                .await
                .map_err(q("migrate"))?;
        }
        let result = self.apply_migrations(&mut conn).await;
        if self.dialect == Dialect::Postgres {
            let _ = sqlx::query("SELECT pg_advisory_unlock(74612026)")
                .execute(&mut *conn)
                .await;
        }
        result
    }

    async fn apply_migrations(&self, conn: &mut sqlx::AnyConnection) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut *conn)
            .await
            .map_err(q("migrate"))?;
        let migrations = match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS,
            Dialect::Postgres => POSTGRES_MIGRATIONS,
        };
        for (version, sql) in migrations {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(q("migrate"))?;
            if applied.is_some() {
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(q("migrate"))?;
            let claimed = sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(version)
                .bind(ts(&Utc::now()))
                .execute(&mut *tx)
                .await
                .map_err(q("migrate"))?;
            // Another process applied it between the check and this transaction
            // (statements like ALTER TABLE cannot run twice).
            if claimed.rows_affected() == 0 {
                tx.rollback().await.map_err(q("migrate"))?;
                continue;
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(q("migrate"))?;
            tx.commit().await.map_err(q("migrate"))?;
        }
        Ok(())
    }

    pub(crate) fn run_from_row(row: &AnyRow) -> Result<RunRecord> {
        let id: String = row.get("id");
        let what = format!("run {id}");
        Ok(RunRecord {
            pipeline_name: row.get("pipeline_name"),
            display_name: row.get("display_name"),
            state: parse_state(&row.get::<String, _>("state"), &what)?,
            spec: row.get("spec"),
            parameters: parse_json(Some(row.get("parameters")), &what)?.unwrap_or(Value::Null),
            pipeline_root: row.get("pipeline_root"),
            options: parse_json(Some(row.get("options")), &what)?.unwrap_or(Value::Null),
            outputs: parse_json(row.get("outputs"), &what)?,
            error: row.get("error"),
            lease: lease_from_row(row),
            created_at: parse_ts(Some(row.get("created_at")), &what)?.unwrap_or_else(Utc::now),
            started_at: parse_ts(row.get("started_at"), &what)?,
            finished_at: parse_ts(row.get("finished_at"), &what)?,
            id,
        })
    }

    fn task_from_row(row: &AnyRow) -> Result<TaskRecord> {
        let key: String = row.get("task_key");
        let what = format!("task {key}");
        Ok(TaskRecord {
            run_id: row.get("run_id"),
            name: row.get("name"),
            parent_key: row.get("parent_key"),
            kind: row.get("kind"),
            state: parse_state(&row.get::<String, _>("state"), &what)?,
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
        let exact: Option<String> = sqlx::query_scalar("SELECT id FROM runs WHERE id = $1")
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
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM runs WHERE id LIKE $1 LIMIT 2")
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
impl RunStore for SqlStore {
    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(q("create run"))?;
        let head = sqlx::query(
            "INSERT INTO runs (id, pipeline_name, display_name, state, spec, parameters, pipeline_root, options, \
             outputs, error, owner_pid, owner_id, owner_host, lease_until, created_at, started_at, finished_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)",
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
        .bind(&run.error);
        bind_lease(head, run.lease.as_ref())
            .bind(ts(&run.created_at))
            .bind(run.started_at.as_ref().map(ts))
            .bind(run.finished_at.as_ref().map(ts))
            .execute(&mut *tx)
            .await
            .map_err(insert_error("create run", "run", &run.id))?;
        sqlx::query(
            "INSERT INTO transitions (run_id, task_key, state, at) VALUES ($1, NULL, $2, $3)",
        )
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
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(&id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("get run"))?
            .ok_or_else(|| StoreError::RunNotFound(id.clone()))?;
        Self::run_from_row(&row)
    }

    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>> {
        let sql =
            format!("SELECT {RUN_LIST_COLUMNS} FROM runs r ORDER BY r.created_at DESC LIMIT $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
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
        // An empty `from` means any state.
        let guard = if from.is_empty() {
            String::new()
        } else {
            format!(" AND state IN ({})", placeholders(9, from.len()))
        };
        let sql = format!(
            "UPDATE runs SET state = $1, \
               outputs = COALESCE($2, CASE WHEN $7 THEN NULL ELSE outputs END), \
               error = COALESCE($3, CASE WHEN $7 THEN NULL ELSE error END), \
               started_at = COALESCE($4, started_at), \
               finished_at = COALESCE($5, CASE WHEN $7 THEN NULL ELSE finished_at END), \
               cancel_requested = CASE WHEN $7 THEN 0 ELSE cancel_requested END \
             WHERE id = $6 AND COALESCE(owner_id, '') = COALESCE($8, owner_id, ''){guard}"
        );
        let mut tx = self.pool.begin().await.map_err(q("update run"))?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(json_text(&update.outputs))
            .bind(update.error.clone())
            .bind(update.started_at.as_ref().map(ts))
            .bind(update.finished_at.as_ref().map(ts))
            .bind(id.to_string())
            .bind(update.reset)
            .bind(update.if_owned_by.clone());
        for st in from {
            query = query.bind(st.as_str());
        }
        let res = query.execute(&mut *tx).await.map_err(q("update run"))?;
        if res.rows_affected() == 0 {
            tx.rollback().await.map_err(q("update run"))?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO transitions (run_id, task_key, state, at) VALUES ($1, NULL, $2, $3)",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(ts(&now))
        .execute(&mut *tx)
        .await
        .map_err(q("update run"))?;
        tx.commit().await.map_err(q("update run"))?;
        Ok(true)
    }

    async fn set_owner(&self, id: &str, lease: Option<&Lease>) -> Result<()> {
        let head = sqlx::query(
            "UPDATE runs SET owner_pid = $1, owner_id = $2, owner_host = $3, lease_until = $4 WHERE id = $5",
        );
        bind_lease(head, lease)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(q("set run owner"))?;
        Ok(())
    }

    async fn put_task(&self, t: &TaskRecord, owner: Option<&str>) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(q("write task"))?;
        // Write first (takes the write lock), then compare with the old state.
        // `INSERT … SELECT … WHERE` (never `VALUES`) so the owner fence is part
        // of the write; SQLite needs the WHERE for its upsert parse anyway.
        // On PostgreSQL the fence takes a share lock on the run's row: a
        // take-over committing meanwhile is waited for and then seen (READ
        // COMMITTED re-reads a locked row), and a take-over waits for this
        // write. SQLite's write lock, taken first, already orders them.
        let lock = self.share_lock();
        let sql = format!(
            "INSERT INTO tasks (run_id, task_key, name, parent_key, kind, state, attempt, cached, inputs, outputs, \
               log_path, error, fingerprint, started_at, finished_at) \
             SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15 \
             WHERE $18 IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = $16 AND owner_id = $18{lock}) \
             ON CONFLICT (run_id, task_key) DO UPDATE SET name = excluded.name, parent_key = excluded.parent_key, \
               kind = excluded.kind, state = excluded.state, attempt = excluded.attempt, cached = excluded.cached, \
               inputs = excluded.inputs, outputs = excluded.outputs, log_path = excluded.log_path, \
               error = excluded.error, fingerprint = excluded.fingerprint, started_at = excluded.started_at, \
               finished_at = excluded.finished_at \
             RETURNING (SELECT state FROM transitions WHERE run_id = $16 AND task_key = $17 ORDER BY seq DESC LIMIT 1)"
        );
        let written: Option<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
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
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("write task"))?;
        let Some(old) = written else {
            tx.rollback().await.map_err(q("write task"))?;
            return Ok(false);
        };
        if old.as_deref() != Some(t.state.as_str()) {
            sqlx::query(
                "INSERT INTO transitions (run_id, task_key, state, at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&t.run_id)
            .bind(&t.task_key)
            .bind(t.state.as_str())
            .bind(ts(&Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(q("write task"))?;
        }
        tx.commit().await.map_err(q("write task"))?;
        Ok(true)
    }

    async fn get_task(&self, run_id: &str, task_key: &str) -> Result<Option<TaskRecord>> {
        let row = sqlx::query("SELECT * FROM tasks WHERE run_id = $1 AND task_key = $2")
            .bind(run_id)
            .bind(task_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("get task"))?;
        row.as_ref().map(Self::task_from_row).transpose()
    }

    async fn list_tasks(&self, run_id: &str) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query("SELECT * FROM tasks WHERE run_id = $1 ORDER BY COALESCE(started_at, finished_at), task_key")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("list tasks"))?;
        rows.iter().map(Self::task_from_row).collect()
    }

    async fn transitions(&self, run_id: &str) -> Result<Vec<Transition>> {
        let rows = sqlx::query(
            "SELECT task_key, state, at FROM transitions WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(q("list transitions"))?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    task_key: r.get("task_key"),
                    state: parse_state(&r.get::<String, _>("state"), "transition")?,
                    at: parse_ts(Some(r.get("at")), "transition")?.unwrap_or_else(Utc::now),
                })
            })
            .collect()
    }

    async fn get_cache(&self, fingerprint: &str) -> Result<Option<CacheEntry>> {
        let row = sqlx::query("SELECT * FROM cache_entries WHERE fingerprint = $1")
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
            "INSERT INTO cache_entries (fingerprint, outputs, run_id, task_key, created_at) VALUES ($1,$2,$3,$4,$5) \
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
