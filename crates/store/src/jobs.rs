//! [`JobStore`] on the SQLite database.

use chrono::Utc;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::sql::{bind_lease, lease_from_row, parse_json, parse_state, parse_ts, q, ts};
use crate::{
    JobEventRecord, JobMetricPoint, JobRecord, JobStore, Lease, Result, SqlStore, State,
    StoreError, TaskLink,
};

fn job_from_row(row: &AnyRow) -> Result<JobRecord> {
    let id: String = row.get("id");
    let what = format!("job {id}");
    Ok(JobRecord {
        name: row.get("name"),
        backend: row.get("backend"),
        state: parse_state(&row.get::<String, _>("state"), &what)?,
        spec: parse_json(Some(row.get("spec")), &what)?.unwrap_or(Value::Null),
        restarts: row.get::<i64, _>("restarts") as u32,
        model: row.get("model"),
        metrics: parse_json(row.get("metrics"), &what)?,
        failure_reason: row.get("failure_reason"),
        logs_dir: row.get("logs_dir"),
        placement: parse_json(row.get("placement"), &what)?,
        kpi: parse_json(row.get("kpi"), &what)?,
        lease: lease_from_row(row),
        task: match (
            row.get::<Option<String>, _>("run_id"),
            row.get::<Option<String>, _>("task_key"),
        ) {
            (Some(run_id), Some(task_key)) => Some(TaskLink { run_id, task_key }),
            _ => None,
        },
        created_at: parse_ts(Some(row.get("created_at")), &what)?.unwrap_or_else(Utc::now),
        started_at: parse_ts(row.get("started_at"), &what)?,
        finished_at: parse_ts(row.get("finished_at"), &what)?,
        id,
    })
}

impl SqlStore {
    async fn resolve_job(&self, id: &str) -> Result<String> {
        let exact: Option<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("get job"))?;
        if let Some(id) = exact {
            return Ok(id);
        }
        let by_name: Option<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE name = $1 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(q("get job"))?;
        if let Some(id) = by_name {
            return Ok(id);
        }
        if id.is_empty() || id.contains(['%', '_']) {
            return Err(StoreError::JobNotFound(id.to_string()));
        }
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM jobs WHERE id LIKE $1 LIMIT 2")
            .bind(format!("{id}%"))
            .fetch_all(self.pool())
            .await
            .map_err(q("get job"))?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::JobNotFound(id.to_string())),
            _ => Err(StoreError::AmbiguousJob(id.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl JobStore for SqlStore {
    async fn create_job(&self, j: &JobRecord) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(q("create job"))?;
        let head = sqlx::query(
            "INSERT INTO jobs (id, name, backend, state, spec, restarts, model, metrics, failure_reason, logs_dir, \
             created_at, started_at, finished_at, placement, run_id, task_key, owner_pid, owner_id, owner_host, lease_until) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)",
        )
        .bind(&j.id)
        .bind(&j.name)
        .bind(&j.backend)
        .bind(j.state.as_str())
        .bind(j.spec.to_string())
        .bind(i64::from(j.restarts))
        .bind(&j.model)
        .bind(j.metrics.as_ref().map(Value::to_string))
        .bind(&j.failure_reason)
        .bind(&j.logs_dir)
        .bind(ts(&j.created_at))
        .bind(j.started_at.as_ref().map(ts))
        .bind(j.finished_at.as_ref().map(ts))
        .bind(j.placement.as_ref().map(Value::to_string))
        .bind(j.task.as_ref().map(|t| t.run_id.clone()))
        .bind(j.task.as_ref().map(|t| t.task_key.clone()));
        bind_lease(head, j.lease.as_ref())
            .execute(&mut *tx)
            .await
            .map_err(q("create job"))?;
        sqlx::query(
            "INSERT INTO job_events (job_id, state, message, at) VALUES ($1, $2, NULL, $3)",
        )
        .bind(&j.id)
        .bind(j.state.as_str())
        .bind(ts(&j.created_at))
        .execute(&mut *tx)
        .await
        .map_err(q("create job"))?;
        tx.commit().await.map_err(q("create job"))
    }

    async fn get_job(&self, id: &str) -> Result<JobRecord> {
        let id = self.resolve_job(id).await?;
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(&id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("get job"))?
            .ok_or_else(|| StoreError::JobNotFound(id.clone()))?;
        job_from_row(&row)
    }

    async fn list_jobs(&self, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query("SELECT * FROM jobs ORDER BY created_at DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(q("list jobs"))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn update_job(
        &self,
        j: &JobRecord,
        message: Option<&str>,
        owner: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.pool().begin().await.map_err(q("update job"))?;
        let old: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE jobs SET state = $1, restarts = $2, model = $3, metrics = $4, failure_reason = $5, logs_dir = $6, \
             owner_pid = $7, started_at = $8, finished_at = $9, placement = $10, owner_id = $13, owner_host = $14, \
             backend = $17, spec = $18, kpi = $19, \
             lease_until = CASE WHEN $15 IS NULL THEN NULL WHEN owner_id = $13 AND lease_until > $15 THEN lease_until ELSE $15 END \
             WHERE id = $11 AND COALESCE(owner_id, '') = COALESCE($16, owner_id, '') \
             RETURNING (SELECT state FROM job_events WHERE job_id = $12 ORDER BY seq DESC LIMIT 1)",
        )
        .bind(j.state.as_str())
        .bind(i64::from(j.restarts))
        .bind(&j.model)
        .bind(j.metrics.as_ref().map(Value::to_string))
        .bind(&j.failure_reason)
        .bind(&j.logs_dir)
        .bind(j.lease.as_ref().map(|l| i64::from(l.pid)))
        .bind(j.started_at.as_ref().map(ts))
        .bind(j.finished_at.as_ref().map(ts))
        .bind(j.placement.as_ref().map(Value::to_string))
        .bind(&j.id)
        .bind(&j.id)
        .bind(j.lease.as_ref().map(|l| l.owner.clone()))
        .bind(j.lease.as_ref().map(|l| l.host.clone()))
        // A record read before the last renewal never shortens the lease.
        .bind(j.lease.as_ref().map(Lease::until_ms))
        .bind(owner)
        // A placed job that failed over runs elsewhere from then on.
        .bind(&j.backend)
        .bind(j.spec.to_string())
        .bind(j.kpi.as_ref().map(Value::to_string))
        .fetch_optional(&mut *tx)
        .await
        .map_err(q("update job"))?;
        let Some(old) = old else {
            tx.rollback().await.map_err(q("update job"))?;
            return Ok(false);
        };
        if old.as_deref() != Some(j.state.as_str()) || message.is_some() {
            sqlx::query(
                "INSERT INTO job_events (job_id, state, message, at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&j.id)
            .bind(j.state.as_str())
            .bind(message)
            .bind(ts(&Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(q("update job"))?;
        }
        tx.commit().await.map_err(q("update job"))?;
        Ok(true)
    }

    async fn add_job_event(
        &self,
        id: &str,
        state: State,
        message: &str,
        owner: Option<&str>,
    ) -> Result<bool> {
        let sql = format!(
            "INSERT INTO job_events (job_id, state, message, at) SELECT $1, $2, $3, $4 \
             WHERE $5 IS NULL OR EXISTS (SELECT 1 FROM jobs WHERE id = $6 AND owner_id = $5{})",
            self.share_lock()
        );
        let res = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(state.as_str())
            .bind(message)
            .bind(ts(&Utc::now()))
            .bind(owner)
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(q("add job event"))?;
        Ok(res.rows_affected() > 0)
    }

    async fn job_events(&self, id: &str) -> Result<Vec<JobEventRecord>> {
        let rows =
            sqlx::query("SELECT state, message, at FROM job_events WHERE job_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(self.pool())
                .await
                .map_err(q("list job events"))?;
        rows.iter()
            .map(|r| {
                Ok(JobEventRecord {
                    state: parse_state(&r.get::<String, _>("state"), "job event")?,
                    message: r.get("message"),
                    at: parse_ts(Some(r.get("at")), "job event")?.unwrap_or_else(Utc::now),
                })
            })
            .collect()
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state IN ('PENDING', 'RUNNING', 'CANCELING') ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(q("unfinished jobs"))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn job_for_task(&self, link: &TaskLink) -> Result<Option<JobRecord>> {
        let row = sqlx::query(
            "SELECT * FROM jobs WHERE run_id = $1 AND task_key = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(&link.run_id)
        .bind(&link.task_key)
        .fetch_optional(self.pool())
        .await
        .map_err(q("job of a task"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn add_job_metrics(
        &self,
        id: &str,
        points: &[(String, f64)],
        owner: Option<&str>,
    ) -> Result<bool> {
        if points.is_empty() {
            return Ok(true);
        }
        let now = ts(&Utc::now());
        let mut tx = self.pool().begin().await.map_err(q("add job metrics"))?;
        for (name, value) in points {
            let sql = format!(
                "INSERT INTO job_metrics (job_id, name, value, at) SELECT $1, $2, $3, $4 \
                 WHERE $5 IS NULL OR EXISTS (SELECT 1 FROM jobs WHERE id = $6 AND owner_id = $5{})",
                self.share_lock()
            );
            let res = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(name)
                .bind(*value)
                .bind(&now)
                .bind(owner)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(q("add job metrics"))?;
            if res.rows_affected() == 0 {
                tx.rollback().await.map_err(q("add job metrics"))?;
                return Ok(false);
            }
        }
        tx.commit().await.map_err(q("add job metrics"))?;
        Ok(true)
    }

    async fn job_metrics(&self, id: &str) -> Result<Vec<JobMetricPoint>> {
        let rows =
            sqlx::query("SELECT name, value, at FROM job_metrics WHERE job_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(self.pool())
                .await
                .map_err(q("list job metrics"))?;
        rows.iter()
            .map(|r| {
                Ok(JobMetricPoint {
                    name: r.get("name"),
                    value: r.get("value"),
                    at: parse_ts(Some(r.get("at")), "job metric")?.unwrap_or_else(Utc::now),
                })
            })
            .collect()
    }
}
