//! [`CatalogStore`] on the SQLite database.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::sql::{insert_error, parse_json, parse_ts, q, ts, RUN_LIST_COLUMNS};
use crate::{
    CatalogStore, ExperimentRecord, PipelineRecord, PipelineVersionRecord, RecurringRunRecord,
    Result, RunCatalog, RunField, RunFilter, RunRecord, SqlStore, Stats, StoreError, Tags,
};

fn experiment(row: &AnyRow) -> Result<ExperimentRecord> {
    Ok(ExperimentRecord {
        id: row.get("id"),
        display_name: row.get("display_name"),
        description: row.get("description"),
        storage_state: row.get("storage_state"),
        created_at: parse_ts(Some(row.get("created_at")), "experiment")?.unwrap_or_else(Utc::now),
    })
}

fn pipeline(row: &AnyRow) -> Result<PipelineRecord> {
    Ok(PipelineRecord {
        id: row.get("id"),
        name: row.get("name"),
        display_name: row.get("display_name"),
        description: row.get("description"),
        created_at: parse_ts(Some(row.get("created_at")), "pipeline")?.unwrap_or_else(Utc::now),
        tags: tags(row, "pipeline")?,
    })
}

fn version(row: &AnyRow) -> Result<PipelineVersionRecord> {
    Ok(PipelineVersionRecord {
        id: row.get("id"),
        pipeline_id: row.get("pipeline_id"),
        name: row.get("name"),
        display_name: row.get("display_name"),
        description: row.get("description"),
        spec: parse_json(Some(row.get("spec")), "pipeline version")?.unwrap_or(Value::Null),
        created_at: parse_ts(Some(row.get("created_at")), "pipeline version")?
            .unwrap_or_else(Utc::now),
        tags: tags(row, "pipeline version")?,
    })
}

fn tags(row: &AnyRow, what: &str) -> Result<Tags> {
    match parse_json(row.get("tags"), what)? {
        Some(v) => serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
            what: format!("{what} tags"),
            message: e.to_string(),
        }),
        None => Ok(Tags::new()),
    }
}

/// Sets only the given fields of a pipeline or version in one statement, so
/// two updates of different fields both land.
async fn update_labels(
    store: &SqlStore,
    table: &'static str,
    kind: &'static str,
    id: &str,
    display_name: Option<&str>,
    tags: Option<&Tags>,
) -> Result<()> {
    let mut sets = Vec::new();
    let mut values: Vec<Option<String>> = Vec::new();
    if let Some(name) = display_name {
        values.push(Some(name.to_string()));
        sets.push(format!("display_name = ${}", values.len()));
    }
    if let Some(tags) = tags {
        values.push(tags_text(tags));
        sets.push(format!("tags = ${}", values.len()));
    }
    let sql = if sets.is_empty() {
        format!("UPDATE {table} SET id = id WHERE id = $1")
    } else {
        format!(
            "UPDATE {table} SET {} WHERE id = ${}",
            sets.join(", "),
            values.len() + 1
        )
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for v in values {
        query = query.bind(v);
    }
    let r = query
        .bind(id)
        .execute(store.pool())
        .await
        .map_err(q("update pipeline or version"))?;
    if r.rows_affected() == 0 {
        return Err(StoreError::not_found(kind, id));
    }
    Ok(())
}

/// Tags as stored: NULL when there are none.
fn tags_text(tags: &Tags) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).unwrap_or_default())
}

fn catalog(row: &AnyRow) -> Result<RunCatalog> {
    Ok(RunCatalog {
        run_id: row.get("run_id"),
        experiment_id: row.get("experiment_id"),
        storage_state: row.get("storage_state"),
        description: row.get("description"),
        pipeline_id: row.get("pipeline_id"),
        pipeline_version_id: row.get("pipeline_version_id"),
        runtime_config: parse_json(row.get("runtime_config"), "run")?,
        recurring_run_id: row.get("recurring_run_id"),
        service_account: row.get("service_account"),
    })
}

fn recurring(row: &AnyRow) -> Result<RecurringRunRecord> {
    let what = "recurring run";
    Ok(RecurringRunRecord {
        id: row.get("id"),
        display_name: row.get("display_name"),
        description: row.get("description"),
        experiment_id: row.get("experiment_id"),
        pipeline_id: row.get("pipeline_id"),
        pipeline_version_id: row.get("pipeline_version_id"),
        pipeline_spec: parse_json(row.get("pipeline_spec"), what)?,
        runtime_config: parse_json(row.get("runtime_config"), what)?,
        trigger: parse_json(Some(row.get("trigger_spec")), what)?.unwrap_or(Value::Null),
        max_concurrency: row.get("max_concurrency"),
        no_catchup: row.get::<i64, _>("no_catchup") != 0,
        enabled: row.get::<i64, _>("enabled") != 0,
        next_fire: row
            .get::<Option<i64>, _>("next_fire_ms")
            .and_then(chrono::DateTime::from_timestamp_millis),
        error: row.get("error"),
        created_at: parse_ts(Some(row.get("created_at")), what)?.unwrap_or_else(Utc::now),
        updated_at: parse_ts(Some(row.get("updated_at")), what)?.unwrap_or_else(Utc::now),
        service_account: row.get("service_account"),
    })
}

async fn insert_version(conn: &mut sqlx::AnyConnection, v: &PipelineVersionRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO pipeline_versions (id, pipeline_id, name, display_name, description, spec, created_at, tags) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
    )
    .bind(&v.id)
    .bind(&v.pipeline_id)
    .bind(&v.name)
    .bind(&v.display_name)
    .bind(&v.description)
    .bind(v.spec.to_string())
    .bind(ts(&v.created_at))
    .bind(tags_text(&v.tags))
    .execute(conn)
    .await
    .map_err(insert_error("create pipeline version", "pipeline version", &v.name))?;
    Ok(())
}

#[async_trait::async_trait]
impl CatalogStore for SqlStore {
    async fn create_experiment(&self, e: &ExperimentRecord) -> Result<()> {
        sqlx::query("INSERT INTO experiments (id, display_name, description, storage_state, created_at) VALUES ($1,$2,$3,$4,$5)")
            .bind(&e.id)
            .bind(&e.display_name)
            .bind(&e.description)
            .bind(&e.storage_state)
            .bind(ts(&e.created_at))
            .execute(self.pool())
            .await
            .map_err(insert_error("create experiment", "experiment", &e.display_name))?;
        Ok(())
    }

    async fn get_experiment(&self, id: &str) -> Result<ExperimentRecord> {
        let row = sqlx::query("SELECT * FROM experiments WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("get experiment"))?
            .ok_or_else(|| StoreError::not_found("experiment", id))?;
        experiment(&row)
    }

    async fn experiment_by_name(&self, name: &str) -> Result<Option<ExperimentRecord>> {
        let row = sqlx::query("SELECT * FROM experiments WHERE display_name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(q("get experiment"))?;
        row.as_ref().map(experiment).transpose()
    }

    async fn list_experiments(&self) -> Result<Vec<ExperimentRecord>> {
        let rows = sqlx::query("SELECT * FROM experiments ORDER BY created_at")
            .fetch_all(self.pool())
            .await
            .map_err(q("list experiments"))?;
        rows.iter().map(experiment).collect()
    }

    async fn set_experiment_storage(&self, id: &str, state: &str) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(q("update experiment"))?;
        let r = sqlx::query("UPDATE experiments SET storage_state = $1 WHERE id = $2")
            .bind(state)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("update experiment"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("experiment", id));
        }
        if state == "ARCHIVED" {
            // As KFP: archiving an experiment archives its runs and disables
            // its recurring runs; unarchiving brings back only the experiment.
            sqlx::query(
                "UPDATE run_catalog SET storage_state = 'ARCHIVED' WHERE experiment_id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("archive the experiment's runs"))?;
            sqlx::query(
                "UPDATE recurring_runs SET enabled = 0, updated_at = $1 WHERE experiment_id = $2",
            )
            .bind(ts(&Utc::now()))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(q("disable the experiment's recurring runs"))?;
        }
        tx.commit().await.map_err(q("update experiment"))?;
        Ok(())
    }

    async fn delete_experiment(&self, id: &str) -> Result<()> {
        let r = sqlx::query("DELETE FROM experiments WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(q("delete experiment"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("experiment", id));
        }
        Ok(())
    }

    async fn create_pipeline(
        &self,
        p: &PipelineRecord,
        first_version: Option<&PipelineVersionRecord>,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(q("create pipeline"))?;
        sqlx::query("INSERT INTO pipelines (id, name, display_name, description, created_at, tags) VALUES ($1,$2,$3,$4,$5,$6)")
            .bind(&p.id)
            .bind(&p.name)
            .bind(&p.display_name)
            .bind(&p.description)
            .bind(ts(&p.created_at))
            .bind(tags_text(&p.tags))
            .execute(&mut *tx)
            .await
            .map_err(insert_error("create pipeline", "pipeline", &p.name))?;
        if let Some(v) = first_version {
            insert_version(&mut tx, v).await?;
        }
        tx.commit().await.map_err(q("create pipeline"))
    }

    async fn get_pipeline(&self, id: &str) -> Result<PipelineRecord> {
        let row = sqlx::query("SELECT * FROM pipelines WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("get pipeline"))?
            .ok_or_else(|| StoreError::not_found("pipeline", id))?;
        pipeline(&row)
    }

    async fn pipeline_by_name(&self, name: &str) -> Result<Option<PipelineRecord>> {
        let row = sqlx::query("SELECT * FROM pipelines WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(q("get pipeline"))?;
        row.as_ref().map(pipeline).transpose()
    }

    async fn list_pipelines(&self) -> Result<Vec<PipelineRecord>> {
        let rows = sqlx::query("SELECT * FROM pipelines ORDER BY created_at")
            .fetch_all(self.pool())
            .await
            .map_err(q("list pipelines"))?;
        rows.iter().map(pipeline).collect()
    }

    async fn delete_pipeline(&self, id: &str) -> Result<()> {
        let r = sqlx::query("DELETE FROM pipelines WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(q("delete pipeline"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("pipeline", id));
        }
        Ok(())
    }

    async fn update_pipeline(
        &self,
        id: &str,
        display_name: Option<&str>,
        tags: Option<&Tags>,
    ) -> Result<()> {
        update_labels(self, "pipelines", "pipeline", id, display_name, tags).await
    }

    async fn update_version(
        &self,
        id: &str,
        display_name: Option<&str>,
        tags: Option<&Tags>,
    ) -> Result<()> {
        update_labels(
            self,
            "pipeline_versions",
            "pipeline version",
            id,
            display_name,
            tags,
        )
        .await
    }

    async fn create_version(&self, v: &PipelineVersionRecord) -> Result<()> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(q("create pipeline version"))?;
        insert_version(&mut conn, v).await
    }

    async fn get_version(&self, id: &str) -> Result<PipelineVersionRecord> {
        let row = sqlx::query("SELECT * FROM pipeline_versions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("get pipeline version"))?
            .ok_or_else(|| StoreError::not_found("pipeline version", id))?;
        version(&row)
    }

    async fn list_versions(&self, pipeline_id: &str) -> Result<Vec<PipelineVersionRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM pipeline_versions WHERE pipeline_id = $1 ORDER BY created_at",
        )
        .bind(pipeline_id)
        .fetch_all(self.pool())
        .await
        .map_err(q("list pipeline versions"))?;
        rows.iter().map(version).collect()
    }

    async fn delete_version(&self, id: &str) -> Result<()> {
        let r = sqlx::query("DELETE FROM pipeline_versions WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(q("delete pipeline version"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("pipeline version", id));
        }
        Ok(())
    }

    async fn put_run_catalog(&self, c: &RunCatalog) -> Result<()> {
        sqlx::query(
            "INSERT INTO run_catalog (run_id, experiment_id, storage_state, description, pipeline_id, pipeline_version_id, runtime_config, recurring_run_id, service_account) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (run_id) DO UPDATE SET experiment_id = excluded.experiment_id, \
             storage_state = excluded.storage_state, description = excluded.description, pipeline_id = excluded.pipeline_id, \
             pipeline_version_id = excluded.pipeline_version_id, runtime_config = excluded.runtime_config, \
             recurring_run_id = excluded.recurring_run_id, service_account = excluded.service_account",
        )
        .bind(&c.run_id)
        .bind(&c.experiment_id)
        .bind(&c.storage_state)
        .bind(&c.description)
        .bind(&c.pipeline_id)
        .bind(&c.pipeline_version_id)
        .bind(c.runtime_config.as_ref().map(Value::to_string))
        .bind(&c.recurring_run_id)
        .bind(&c.service_account)
        .execute(self.pool())
        .await
        .map_err(q("write run catalog"))?;
        Ok(())
    }

    async fn get_run_catalog(&self, run_id: &str) -> Result<Option<RunCatalog>> {
        let row = sqlx::query("SELECT * FROM run_catalog WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("read run catalog"))?;
        row.as_ref().map(catalog).transpose()
    }

    async fn list_run_catalog(&self) -> Result<Vec<RunCatalog>> {
        let rows = sqlx::query("SELECT * FROM run_catalog")
            .fetch_all(self.pool())
            .await
            .map_err(q("list run catalog"))?;
        rows.iter().map(catalog).collect()
    }

    async fn delete_run(&self, run_id: &str) -> Result<()> {
        let r = sqlx::query("DELETE FROM runs WHERE id = $1")
            .bind(run_id)
            .execute(self.pool())
            .await
            .map_err(q("delete run"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("run", run_id));
        }
        Ok(())
    }

    async fn page_runs(
        &self,
        experiment_id: Option<&str>,
        filters: &[RunFilter],
        desc: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<(RunRecord, Option<RunCatalog>)>, u64)> {
        let base = if experiment_id.is_some() {
            "WHERE c.experiment_id = $1"
        } else {
            "WHERE ($1 IS NULL OR $1 = '')"
        };
        // The page's own binds are $2 and $3; the filters' values follow them.
        let filter = format!("{base}{}", filter_sql(filters, 4));
        let count_filter = format!("{base}{}", filter_sql(filters, 2));
        let order = if desc { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {RUN_LIST_COLUMNS}, c.run_id AS c_run_id, c.experiment_id AS c_experiment_id, c.storage_state AS c_storage_state, \
             c.description AS c_description, c.pipeline_id AS c_pipeline_id, c.pipeline_version_id AS c_pipeline_version_id, \
             c.runtime_config AS c_runtime_config, c.recurring_run_id AS c_recurring_run_id, c.service_account AS c_service_account FROM runs r LEFT JOIN run_catalog c ON c.run_id = r.id {filter} \
             ORDER BY r.created_at {order}, r.id LIMIT $2 OFFSET $3"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(experiment_id.unwrap_or("").to_string())
            .bind(limit as i64)
            .bind(offset as i64);
        for v in filters.iter().flat_map(|f| &f.values) {
            query = query.bind(v.clone());
        }
        let rows = query.fetch_all(self.pool()).await.map_err(q("list runs"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let run = SqlStore::run_from_row(row)?;
            let cat = match row.get::<Option<String>, _>("c_run_id") {
                Some(run_id) => Some(RunCatalog {
                    run_id,
                    experiment_id: row.get("c_experiment_id"),
                    storage_state: row.get("c_storage_state"),
                    description: row.get("c_description"),
                    pipeline_id: row.get("c_pipeline_id"),
                    pipeline_version_id: row.get("c_pipeline_version_id"),
                    runtime_config: parse_json(row.get("c_runtime_config"), "run")?,
                    recurring_run_id: row.get("c_recurring_run_id"),
                    service_account: row.get("c_service_account"),
                }),
                None => None,
            };
            out.push((run, cat));
        }
        let count_sql = format!(
            "SELECT COUNT(*) FROM runs r LEFT JOIN run_catalog c ON c.run_id = r.id {count_filter}"
        );
        let mut count = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
            .bind(experiment_id.unwrap_or("").to_string());
        for v in filters.iter().flat_map(|f| &f.values) {
            count = count.bind(v.clone());
        }
        let total: i64 = count
            .fetch_one(self.pool())
            .await
            .map_err(q("count runs"))?;
        Ok((out, total.max(0) as u64))
    }

    async fn create_recurring_run(&self, r: &RecurringRunRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO recurring_runs (id, display_name, description, experiment_id, pipeline_id, pipeline_version_id, \
             pipeline_spec, runtime_config, trigger_spec, max_concurrency, no_catchup, enabled, next_fire_ms, created_at, updated_at, service_account) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
        )
        .bind(&r.id)
        .bind(&r.display_name)
        .bind(&r.description)
        .bind(&r.experiment_id)
        .bind(&r.pipeline_id)
        .bind(&r.pipeline_version_id)
        .bind(r.pipeline_spec.as_ref().map(Value::to_string))
        .bind(r.runtime_config.as_ref().map(Value::to_string))
        .bind(r.trigger.to_string())
        .bind(r.max_concurrency)
        .bind(i64::from(r.no_catchup))
        .bind(i64::from(r.enabled))
        .bind(r.next_fire.map(|t| t.timestamp_millis()))
        .bind(ts(&r.created_at))
        .bind(ts(&r.updated_at))
        .bind(&r.service_account)
        .execute(self.pool())
        .await
        .map_err(insert_error("create recurring run", "recurring run", &r.id))?;
        Ok(())
    }

    async fn get_recurring_run(&self, id: &str) -> Result<RecurringRunRecord> {
        let row = sqlx::query("SELECT * FROM recurring_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("read recurring run"))?
            .ok_or_else(|| StoreError::not_found("recurring run", id))?;
        recurring(&row)
    }

    async fn list_recurring_runs(&self) -> Result<Vec<RecurringRunRecord>> {
        let rows = sqlx::query("SELECT * FROM recurring_runs ORDER BY created_at, id")
            .fetch_all(self.pool())
            .await
            .map_err(q("list recurring runs"))?;
        rows.iter().map(recurring).collect()
    }

    async fn due_recurring_runs(&self, now: DateTime<Utc>) -> Result<Vec<RecurringRunRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM recurring_runs WHERE enabled = 1 AND next_fire_ms <= $1 ORDER BY next_fire_ms, id",
        )
        .bind(now.timestamp_millis())
        .fetch_all(self.pool())
        .await
        .map_err(q("list due recurring runs"))?;
        rows.iter().map(recurring).collect()
    }

    async fn set_recurring_run_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        let r = sqlx::query(
            "UPDATE recurring_runs SET enabled = $1, error = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(i64::from(enabled))
        .bind(ts(&Utc::now()))
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(q("enable or disable recurring run"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("recurring run", id));
        }
        Ok(())
    }

    async fn fail_recurring_run(&self, id: &str, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE recurring_runs SET enabled = 0, error = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(error)
        .bind(ts(&Utc::now()))
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(q("disable recurring run"))?;
        Ok(())
    }

    async fn advance_recurring_run(
        &self,
        id: &str,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE recurring_runs SET next_fire_ms = $1 WHERE id = $2 AND next_fire_ms = $3 AND enabled = 1",
        )
        .bind(to.map(|t| t.timestamp_millis()))
        .bind(id)
        .bind(from.timestamp_millis())
        .execute(self.pool())
        .await
        .map_err(q("advance recurring run"))?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_recurring_run(&self, id: &str) -> Result<()> {
        let r = sqlx::query("DELETE FROM recurring_runs WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(q("delete recurring run"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::not_found("recurring run", id));
        }
        Ok(())
    }

    async fn stats(&self) -> Result<Stats> {
        let counts = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .fetch_all(self.pool())
                .await
                .map_err(q("stats"))?;
            Ok::<_, StoreError>(
                rows.iter()
                    .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1).max(0) as u64))
                    .collect::<Vec<_>>(),
            )
        };
        // Durations in Rust: the databases disagree on date arithmetic.
        let durations = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .fetch_all(self.pool())
                .await
                .map_err(q("stats"))?;
            let mut sum = 0.0;
            let mut n = 0u64;
            for r in &rows {
                let (a, b) = (r.get::<Option<String>, _>(0), r.get::<Option<String>, _>(1));
                if let (Some(a), Some(b)) = (parse_ts(a, "stats")?, parse_ts(b, "stats")?) {
                    sum += (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    n += 1;
                }
            }
            Ok::<_, StoreError>((sum, n))
        };
        let jobs = sqlx::query("SELECT backend, state, COUNT(*) FROM jobs GROUP BY backend, state")
            .fetch_all(self.pool())
            .await
            .map_err(q("stats"))?
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    r.get::<String, _>(1),
                    r.get::<i64, _>(2).max(0) as u64,
                )
            })
            .collect();
        Ok(Stats {
            runs_by_state: counts("SELECT state, COUNT(*) FROM runs GROUP BY state").await?,
            tasks_by_state: counts("SELECT state, COUNT(*) FROM tasks WHERE kind = 'container' GROUP BY state").await?,
            jobs,
            run_seconds: durations("SELECT started_at, finished_at FROM runs WHERE finished_at IS NOT NULL").await?,
            task_seconds: durations(
                "SELECT started_at, finished_at FROM tasks WHERE kind = 'container' AND finished_at IS NOT NULL",
            )
            .await?,
            job_seconds: durations("SELECT started_at, finished_at FROM jobs WHERE finished_at IS NOT NULL").await?,
        })
    }
}

/// ` AND col [NOT] IN ($first, …)` for each filter, numbering binds from
/// `first` in the order of the filters' values.
fn filter_sql(filters: &[RunFilter], first: usize) -> String {
    let mut n = first;
    let mut out = String::new();
    for f in filters {
        let col = match f.field {
            RunField::Id => "r.id",
            RunField::DisplayName => "r.display_name",
            RunField::State => "r.state",
            RunField::StorageState => "COALESCE(c.storage_state, 'AVAILABLE')",
            RunField::RecurringRunId => "COALESCE(c.recurring_run_id, '')",
        };
        if f.values.is_empty() {
            // IN () matches nothing; NOT IN () everything.
            out.push_str(if f.negate { "" } else { " AND 1 = 0" });
            continue;
        }
        let binds: Vec<String> = (n..n + f.values.len()).map(|i| format!("${i}")).collect();
        n += f.values.len();
        let not = if f.negate { "NOT " } else { "" };
        out.push_str(&format!(" AND {col} {not}IN ({})", binds.join(", ")));
    }
    out
}
