//! [`LifecycleStore`] on the SQL database: runs and jobs carry the same
//! lifecycle columns (`state`, `owner_*`, `lease_until`, `cancel_requested`),
//! so each operation is one statement with the kind's table in it.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::lifecycle::{Claim, Control, Kind, LifecycleStore};
use crate::sql::{parse_state, placeholders, q, ts};
use crate::{Lease, Result, SqlStore};

/// The kind's table, its error column, and the history row a state change adds.
struct Columns {
    table: &'static str,
    error: &'static str,
    history: &'static str,
}

fn columns(kind: Kind) -> Columns {
    match kind {
        Kind::Run => Columns {
            table: "runs",
            error: "error",
            history:
                "INSERT INTO transitions (run_id, task_key, state, at) VALUES ($1, NULL, $2, $3)",
        },
        Kind::Job => Columns {
            table: "jobs",
            error: "failure_reason",
            history:
                "INSERT INTO job_events (job_id, state, message, at) VALUES ($1, $2, NULL, $3)",
        },
    }
}

#[async_trait::async_trait]
impl LifecycleStore for SqlStore {
    async fn claim(
        &self,
        kind: Kind,
        id: &str,
        observed: Option<&Lease>,
        lease: &Lease,
        claim: Claim<'_>,
    ) -> Result<bool> {
        let Columns {
            table,
            error,
            history,
        } = columns(kind);
        let from = claim.states();
        let sql = format!(
            "UPDATE {table} SET owner_pid = $1, owner_id = $2, owner_host = $3, lease_until = $4, \
               state = COALESCE($5, state), \
               started_at = COALESCE($6, started_at), \
               {error} = CASE WHEN $7 THEN NULL ELSE {error} END, \
               finished_at = CASE WHEN $7 THEN NULL ELSE finished_at END, \
               cancel_requested = CASE WHEN $7 THEN 0 ELSE cancel_requested END \
             WHERE id = $8 AND COALESCE(owner_id, '') = $9 \
               AND (COALESCE(lease_until, -1) = $10 OR owner_id = $2) \
               AND state IN ({})",
            placeholders(11, from.len())
        );
        let mut tx = self.pool().begin().await.map_err(q("claim"))?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(lease.pid))
            .bind(lease.owner.clone())
            .bind(lease.host.clone())
            .bind(lease.until_ms())
            .bind(claim.to.map(|s| s.as_str().to_string()))
            .bind(claim.started_at.as_ref().map(ts))
            .bind(claim.reset)
            .bind(id.to_string())
            .bind(observed.map(|l| l.owner.clone()).unwrap_or_default())
            .bind(observed.map(Lease::until_ms).unwrap_or(-1));
        for st in from {
            query = query.bind(st.as_str());
        }
        let res = query.execute(&mut *tx).await.map_err(q("claim"))?;
        if res.rows_affected() == 0 {
            tx.rollback().await.map_err(q("claim"))?;
            return Ok(false);
        }
        if let Some(to) = claim.to {
            sqlx::query(history)
                .bind(id)
                .bind(to.as_str())
                .bind(ts(&Utc::now()))
                .execute(&mut *tx)
                .await
                .map_err(q("claim"))?;
        }
        tx.commit().await.map_err(q("claim"))?;
        Ok(true)
    }

    async fn release(&self, kind: Kind, id: &str, owner: &str) -> Result<bool> {
        let table = columns(kind).table;
        let sql = format!(
            "UPDATE {table} SET owner_pid = NULL, owner_id = NULL, owner_host = NULL, lease_until = NULL \
             WHERE id = $1 AND owner_id = $2"
        );
        let res = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await
            .map_err(q("release"))?;
        Ok(res.rows_affected() > 0)
    }

    async fn renew_leases(&self, owner: &str, until: DateTime<Utc>) -> Result<u64> {
        let mut renewed = 0;
        for kind in Kind::ALL {
            let table = columns(kind).table;
            let sql = format!(
                "UPDATE {table} SET lease_until = $1 WHERE owner_id = $2 \
                 AND state IN ('PENDING', 'RUNNING', 'CANCELING')"
            );
            renewed += sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(until.timestamp_millis())
                .bind(owner)
                .execute(self.pool())
                .await
                .map_err(q("renew leases"))?
                .rows_affected();
        }
        Ok(renewed)
    }

    async fn control(&self, kind: Kind, id: &str) -> Result<Control> {
        let table = columns(kind).table;
        let sql = format!("SELECT state, cancel_requested, owner_id FROM {table} WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(q("read control"))?
            .ok_or_else(|| kind.not_found(id))?;
        Ok(Control {
            state: parse_state(&row.get::<String, _>("state"), kind.noun())?,
            cancel_requested: row.get::<i64, _>("cancel_requested") != 0,
            owner: row.get("owner_id"),
        })
    }

    async fn request_cancel(&self, kind: Kind, id: &str) -> Result<()> {
        let table = columns(kind).table;
        let sql = format!("UPDATE {table} SET cancel_requested = 1 WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(q("request cancel"))?;
        Ok(())
    }
}
