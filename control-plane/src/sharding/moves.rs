//! Online range moves: the orgs of `[start, end)` move from their shard to another shard of the
//! same region while they keep being served.
//!
//! 1. **Fence** (`copying`): a `range_fence` row on the source and the `range_fence_guard`
//!    trigger on every org table make each write to the range record its row's key in
//!    `range_change`. Transactions older than the fence are waited for, so none can slip past.
//! 2. **Copy**: every org table's rows of the range, in one snapshot, with binary `COPY`.
//! 3. **Catch up** (`catching_up`): captured keys are applied in batches — the source's current
//!    row is upserted on the target, or deleted there when it is gone — until the lag is small.
//! 4. **Pause** (`paused`): the mover takes the move's advisory lock and marks the fence
//!    `paused`; writers to the range (only to the range) wait on the lock inside their
//!    transaction. Transactions already past the trigger are waited for, then the last
//!    captured keys are applied: source and target now hold the same rows.
//! 5. **Verify** (`verifying`): row counts and checksums of every table, both sides. A mismatch
//!    rolls back: target rows deleted, fence removed, the map never changed.
//! 6. **Switch**: the fence becomes `moved` (a writer still pointed at the source gets SQLSTATE
//!    `SY001`, answered `503` with `Retry-After`, and retries on the new shard), the catalog's
//!    ranges are split so `[start, end)` belongs to the target, the lock is released (`done`).
//!    The source keeps its copy until the operator drops it ([`drop_source`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};

use crate::db::migrate::SHARD;

/// Captured keys applied per batch.
const BATCH: i64 = 500;
/// Catch-up stops and the pause begins once fewer captured keys than this are waiting.
const PAUSE_BELOW: i64 = 200;
/// Longest catch-up before the move gives up (writes outpace the copy).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(600);
/// Longest wait for transactions that started before the fence or the pause.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("range [{0}, {1}) is empty, reversed or not positive")]
    BadRange(i64, i64),
    #[error("[{0}, {1}) does not lie within one range of one shard")]
    NotOneRange(i64, i64),
    #[error("unknown shard {0}")]
    UnknownShard(String),
    #[error("the range already lives on {0}")]
    SameShard(String),
    #[error(
        "shard {to} is in {to_region}, the range's orgs live in {from_region}: data never leaves its region"
    )]
    OtherRegion {
        to: String,
        to_region: String,
        from_region: String,
    },
    #[error("move {0} of an overlapping range is not finished")]
    Busy(String),
    #[error("unknown move {0}")]
    UnknownMove(String),
    #[error("the shards' schemas differ: {0}")]
    SchemaDrift(String),
    #[error("the target shard already holds rows of this range ({0})")]
    TargetNotEmpty(String),
    #[error("writes to the range did not drain: {0}")]
    Drain(String),
    #[error("the move is {0}; only a finished move's source copy can be dropped")]
    NotDone(String),
    #[error("the move has already ended: {0}")]
    Finished(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A move as `GET /v1/admin/shard-moves/{id}` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MoveStatus {
    pub id: String,
    pub start: i64,
    pub end: i64,
    pub from_shard: String,
    pub to_shard: String,
    /// `pending`, `copying`, `catching_up`, `paused`, `verifying`, then `done`,
    /// `rolled_back` (verification failed) or `failed` (an error; rolled back).
    pub phase: String,
    /// Rows of the range on the source when the copy began.
    pub rows_total: i64,
    pub rows_copied: i64,
    /// Captured writes not yet applied to the target.
    pub lag_rows: i64,
    /// How long writes to the range were held, in milliseconds.
    pub pause_ms: Option<i64>,
    /// Per table: rows and checksum on each side, and whether they match.
    #[schema(value_type = Option<Object>)]
    pub verification: Option<Value>,
    pub error: Option<String>,
    /// The source's copy of the range has been dropped.
    pub source_dropped: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl MoveStatus {
    pub fn finished(&self) -> bool {
        matches!(self.phase.as_str(), "done" | "rolled_back" | "failed")
    }
}

const COLUMNS: &str = "id, range_start, range_end, from_shard, to_shard, phase, rows_total, \
     rows_copied, lag_rows, pause_ms, verification, error, source_dropped, created_at, \
     updated_at, finished_at";

fn status(row: &sqlx::postgres::PgRow) -> Result<MoveStatus, sqlx::Error> {
    Ok(MoveStatus {
        id: row.try_get("id")?,
        start: row.try_get("range_start")?,
        end: row.try_get("range_end")?,
        from_shard: row.try_get("from_shard")?,
        to_shard: row.try_get("to_shard")?,
        phase: row.try_get("phase")?,
        rows_total: row.try_get("rows_total")?,
        rows_copied: row.try_get("rows_copied")?,
        lag_rows: row.try_get("lag_rows")?,
        pause_ms: row.try_get("pause_ms")?,
        verification: row.try_get("verification")?,
        error: row.try_get("error")?,
        source_dropped: row.try_get("source_dropped")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub async fn get(catalog: &PgPool, id: &str) -> Result<Option<MoveStatus>, sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "select {COLUMNS} from shard_move where id = $1"
    )))
    .bind(id)
    .fetch_optional(catalog)
    .await?
    .map(|r| status(&r))
    .transpose()
}

pub async fn list(catalog: &PgPool) -> Result<Vec<MoveStatus>, sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "select {COLUMNS} from shard_move order by created_at desc limit 100"
    )))
    .fetch_all(catalog)
    .await?
    .iter()
    .map(status)
    .collect()
}

/// Validates a move of `[start, end)` to `to_shard` and records it as `pending`; [`run`] does
/// the work.
pub async fn plan(
    catalog: &PgPool,
    start: i64,
    end: i64,
    to_shard: &str,
) -> Result<MoveStatus, MoveError> {
    if start <= 0 || start >= end {
        return Err(MoveError::BadRange(start, end));
    }
    let mut tx = catalog.begin().await?;
    // One planner at a time, so two overlapping moves cannot both pass the check below.
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('shard_move', 0))")
        .execute(&mut *tx)
        .await?;
    let to_region: Option<String> = sqlx::query_scalar("select region from shard where name = $1")
        .bind(to_shard)
        .fetch_optional(&mut *tx)
        .await?;
    let to_region = to_region.ok_or_else(|| MoveError::UnknownShard(to_shard.to_owned()))?;
    let from: Option<(String, String)> = sqlx::query_as(
        "select r.shard, s.region from shard_range r join shard s on s.name = r.shard
          where r.range_start <= $1 and r.range_end >= $2",
    )
    .bind(start)
    .bind(end)
    .fetch_optional(&mut *tx)
    .await?;
    let (from_shard, from_region) = from.ok_or(MoveError::NotOneRange(start, end))?;
    if from_shard == to_shard {
        return Err(MoveError::SameShard(from_shard));
    }
    if from_region != to_region {
        return Err(MoveError::OtherRegion {
            to: to_shard.to_owned(),
            to_region,
            from_region,
        });
    }
    let busy: Option<String> = sqlx::query_scalar(
        "select id from shard_move
          where phase not in ('done', 'rolled_back', 'failed')
            and int8range(range_start, range_end) && int8range($1, $2)",
    )
    .bind(start)
    .bind(end)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = busy {
        return Err(MoveError::Busy(id));
    }
    let id = format!("mv_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let row = sqlx::query(AssertSqlSafe(format!(
        "insert into shard_move (id, range_start, range_end, from_shard, to_shard)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    )))
    .bind(&id)
    .bind(start)
    .bind(end)
    .bind(&from_shard)
    .bind(to_shard)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(status(&row)?)
}

/// An org table of the shard schema: every table with an `org_id` column.
#[derive(Clone, Debug)]
struct Table {
    name: String,
    pk: Vec<String>,
    /// Columns that are `generated always as identity`.
    identity: Vec<String>,
}

impl Table {
    fn pk_list(&self, alias: &str) -> String {
        self.pk
            .iter()
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The org tables, parents before children (foreign keys), found in the catalog of the shard.
async fn org_tables(pool: &PgPool) -> Result<Vec<Table>, sqlx::Error> {
    let rows: Vec<(String, Vec<String>, Vec<String>)> = sqlx::query_as(
        "select c.relname::text,
                array(select a.attname::text
                        from unnest(i.indkey) with ordinality k(attnum, ord)
                        join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
                       order by k.ord),
                array(select a.attname::text from pg_attribute a
                       where a.attrelid = c.oid and a.attidentity = 'a' and not a.attisdropped)
           from pg_class c
           join pg_namespace n on n.oid = c.relnamespace and n.nspname = current_schema()
           join pg_index i on i.indrelid = c.oid and i.indisprimary
          where c.relkind = 'r'
            and exists (select 1 from pg_attribute x
                         where x.attrelid = c.oid and x.attname = 'org_id' and not x.attisdropped)
          order by c.relname",
    )
    .fetch_all(pool)
    .await?;
    let deps: Vec<(String, String)> = sqlx::query_as(
        "select c.relname::text, p.relname::text
           from pg_constraint k
           join pg_class c on c.oid = k.conrelid
           join pg_class p on p.oid = k.confrelid
          where k.contype = 'f' and k.conrelid <> k.confrelid",
    )
    .fetch_all(pool)
    .await?;
    let mut tables: BTreeMap<String, Table> = rows
        .into_iter()
        .map(|(name, pk, identity)| (name.clone(), Table { name, pk, identity }))
        .collect();
    // Topological order: a table comes after every table it references.
    let mut parents: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (child, parent) in deps {
        if tables.contains_key(&child) && tables.contains_key(&parent) {
            parents.entry(child).or_default().insert(parent);
        }
    }
    let mut ordered = Vec::new();
    while !tables.is_empty() {
        let ready: Vec<String> = tables
            .keys()
            .filter(|t| {
                parents
                    .get(*t)
                    .is_none_or(|ps| ps.iter().all(|p| !tables.contains_key(p)))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            // A cycle cannot happen in this schema; take the rest as they come.
            ordered.extend(std::mem::take(&mut tables).into_values());
            break;
        }
        for t in ready {
            if let Some(table) = tables.remove(&t) {
                ordered.push(table);
            }
        }
    }
    Ok(ordered)
}

/// A pool for one side of a move; sessions in UTC so row texts (checksums) agree.
async fn side_pool(catalog: &PgPool, shard: &str) -> Result<PgPool, MoveError> {
    let dsn: Option<String> = sqlx::query_scalar("select dsn from shard where name = $1")
        .bind(shard)
        .fetch_optional(catalog)
        .await?;
    let dsn = dsn.ok_or_else(|| MoveError::UnknownShard(shard.to_owned()))?;
    let opts = PgConnectOptions::from_str(&dsn)?.options([("TimeZone", "UTC")]);
    Ok(PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await?)
}

async fn set_phase(catalog: &PgPool, id: &str, phase: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update shard_move set phase = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(phase)
        .execute(catalog)
        .await?;
    Ok(())
}

async fn set_counts(catalog: &PgPool, id: &str, copied: i64, lag: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update shard_move set rows_copied = $2, lag_rows = $3, updated_at = now() where id = $1",
    )
    .bind(id)
    .bind(copied)
    .bind(lag)
    .execute(catalog)
    .await?;
    Ok(())
}

/// Runs a planned move to its end, reporting each step to `progress`. Whatever fails is rolled
/// back; the returned status says how it ended. The runner holds the move's runner lock (see
/// [`recover_abandoned`]) throughout: a move someone else runs is refused as busy.
pub async fn run(
    catalog: &PgPool,
    id: &str,
    progress: &(dyn Fn(&MoveStatus) + Send + Sync),
) -> Result<MoveStatus, MoveError> {
    // A recovery looking at the move holds the lock for a moment: wait that out.
    let deadline = Instant::now() + RUNNER_LOCK_WAIT;
    let mut runner = loop {
        match runner_lock(catalog, id).await? {
            Some(conn) => break conn,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => return Err(MoveError::Busy(format!("{id} (another process runs it)"))),
        }
    };
    let out = run_locked(catalog, &mut runner, id, progress).await;
    release_runner(runner).await;
    out
}

/// Runs the move; `runner` is the session holding its runner lock, on which the catalog's
/// ranges are switched, so a runner whose lock was lost (its session ended: a recovery may
/// have rolled the move back meanwhile) cannot switch them.
async fn run_locked(
    catalog: &PgPool,
    runner: &mut PgConnection,
    id: &str,
    progress: &(dyn Fn(&MoveStatus) + Send + Sync),
) -> Result<MoveStatus, MoveError> {
    let mv = get(catalog, id)
        .await?
        .ok_or_else(|| MoveError::UnknownMove(id.to_owned()))?;
    if mv.phase != "pending" {
        return Ok(mv);
    }
    let src = side_pool(catalog, &mv.from_shard).await?;
    let dst = side_pool(catalog, &mv.to_shard).await?;
    let mut mover = Mover {
        catalog,
        mv,
        src,
        dst,
        tables: Vec::new(),
        progress,
        runner: Some(runner),
        lock: None,
        fenced: false,
        copied: false,
    };
    let outcome = mover.execute().await;
    let end = match outcome {
        Ok(()) => "done",
        Err(Outcome::Mismatch) => "rolled_back",
        Err(Outcome::Failed(e)) => {
            tracing::warn!(move_id = %id, error = %e, "range move failed; rolling back");
            sqlx::query("update shard_move set error = $2 where id = $1")
                .bind(id)
                .bind(e.to_string())
                .execute(catalog)
                .await?;
            "failed"
        }
    };
    if end != "done"
        && let Err(e) = mover.roll_back().await
    {
        tracing::error!(move_id = %id, error = %e, "range move could not be rolled back");
        sqlx::query(
            "update shard_move set error = coalesce(error || '; ', '') || $2 where id = $1",
        )
        .bind(id)
        .bind(format!("rollback incomplete: {e}"))
        .execute(catalog)
        .await?;
    }
    mover.release().await;
    sqlx::query(
        "update shard_move set phase = $2, updated_at = now(), finished_at = now() where id = $1",
    )
    .bind(id)
    .bind(end)
    .execute(catalog)
    .await?;
    mover.src.close().await;
    mover.dst.close().await;
    let done = get(catalog, id)
        .await?
        .ok_or_else(|| MoveError::UnknownMove(id.to_owned()))?;
    progress(&done);
    Ok(done)
}

enum Outcome {
    Mismatch,
    Failed(MoveError),
}

impl<E: Into<MoveError>> From<E> for Outcome {
    fn from(e: E) -> Self {
        Outcome::Failed(e.into())
    }
}

struct Mover<'a> {
    catalog: &'a PgPool,
    /// The session holding the move's runner lock (`None` when recovering a move).
    runner: Option<&'a mut PgConnection>,
    mv: MoveStatus,
    src: PgPool,
    dst: PgPool,
    tables: Vec<Table>,
    progress: &'a (dyn Fn(&MoveStatus) + Send + Sync),
    /// The source session holding the move's advisory lock during the pause.
    lock: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    /// The fence exists on the source.
    fenced: bool,
    /// Rows of the range may have been written to the target (by this move).
    copied: bool,
}

impl Mover<'_> {
    async fn report(&mut self) {
        if let Ok(Some(s)) = get(self.catalog, &self.mv.id).await {
            (self.progress)(&s);
            self.mv = s;
        }
    }

    async fn phase(&mut self, phase: &str) -> Result<(), sqlx::Error> {
        set_phase(self.catalog, &self.mv.id, phase).await?;
        self.report().await;
        Ok(())
    }

    async fn execute(&mut self) -> Result<(), Outcome> {
        let (a, b) = (self.mv.start, self.mv.end);
        same_schema(&self.src, &self.dst).await?;
        self.tables = org_tables(&self.src).await?;
        for t in &self.tables {
            let n = range_rows(&self.dst, t, a, b).await?;
            if n > 0 {
                return Err(MoveError::TargetNotEmpty(format!("{n} rows in {}", t.name)).into());
            }
        }

        // 1. Fence: from here on every write to the range is captured.
        self.phase("copying").await?;
        sqlx::query(
            "insert into range_fence (move_id, range_start, range_end, state)
             values ($1, $2, $3, 'capturing')",
        )
        .bind(&self.mv.id)
        .bind(a)
        .bind(b)
        .execute(&self.src)
        .await?;
        self.fenced = true;
        for t in &self.tables {
            let args =
                t.pk.iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
            sqlx::query(AssertSqlSafe(format!(
                "create or replace trigger range_fence_guard
                   before insert or update or delete on {}
                   for each row execute function range_fence_guard({args})",
                t.name
            )))
            .execute(&self.src)
            .await?;
        }
        let fenced_at: DateTime<Utc> = sqlx::query_scalar("select now()")
            .fetch_one(&self.src)
            .await?;
        wait_for_older(&self.src, fenced_at, None).await?;

        // 2. Copy, in one snapshot.
        let mut total = 0;
        for t in &self.tables {
            total += range_rows(&self.src, t, a, b).await?;
        }
        sqlx::query("update shard_move set rows_total = $2 where id = $1")
            .bind(&self.mv.id)
            .bind(total)
            .execute(self.catalog)
            .await?;
        self.copied = true;
        let copied = self.copy().await?;
        set_counts(self.catalog, &self.mv.id, copied, self.lag().await?).await?;

        // 3. Catch up while writes go on.
        self.phase("catching_up").await?;
        let started = Instant::now();
        loop {
            let lag = self.lag().await?;
            set_counts(self.catalog, &self.mv.id, copied, lag).await?;
            self.report().await;
            if lag < PAUSE_BELOW {
                break;
            }
            if started.elapsed() > CATCH_UP_LIMIT {
                return Err(MoveError::Drain(format!(
                    "{lag} captured writes still waiting after {CATCH_UP_LIMIT:?}"
                ))
                .into());
            }
            self.apply(BATCH).await?;
        }

        // 4. Pause the range's writers, drain, verify, switch.
        let mut lock = self.src.acquire().await?;
        keep_alive(&mut lock).await?;
        sqlx::query("select pg_advisory_lock(hashtextextended($1, 0))")
            .bind(&self.mv.id)
            .execute(&mut *lock)
            .await?;
        let holder: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut *lock)
            .await?;
        self.lock = Some(lock);
        let paused = Instant::now();
        sqlx::query("update range_fence set state = 'paused' where move_id = $1")
            .bind(&self.mv.id)
            .execute(&self.src)
            .await?;
        let paused_at: DateTime<Utc> = sqlx::query_scalar("select now()")
            .fetch_one(&self.src)
            .await?;
        self.phase("paused").await?;
        wait_for_older(&self.src, paused_at, Some(holder)).await?;
        while self.apply(BATCH).await? > 0 {}
        set_counts(self.catalog, &self.mv.id, copied, 0).await?;
        // The target's identities must start past every copied id before it takes writes.
        self.bump_identities().await?;

        self.phase("verifying").await?;
        let (ok, report) = self.verify().await?;
        sqlx::query("update shard_move set verification = $2 where id = $1")
            .bind(&self.mv.id)
            .bind(&report)
            .execute(self.catalog)
            .await?;
        if !ok {
            self.record_pause(paused).await?;
            return Err(Outcome::Mismatch);
        }
        sqlx::query("update range_fence set state = 'moved' where move_id = $1")
            .bind(&self.mv.id)
            .execute(&self.src)
            .await?;
        let switched = match self.runner.as_deref_mut() {
            Some(runner) => switch_ranges(runner, &self.mv).await,
            None => Err(MoveError::Busy(format!("{} (no runner lock)", self.mv.id))),
        };
        if let Err(e) = switched {
            sqlx::query("update range_fence set state = 'paused' where move_id = $1")
                .bind(&self.mv.id)
                .execute(&self.src)
                .await?;
            return Err(e.into());
        }
        self.release().await;
        self.record_pause(paused).await?;
        Ok(())
    }

    async fn record_pause(&self, since: Instant) -> Result<(), sqlx::Error> {
        let ms = i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX);
        sqlx::query("update shard_move set pause_ms = $2 where id = $1")
            .bind(&self.mv.id)
            .bind(ms)
            .execute(self.catalog)
            .await?;
        Ok(())
    }

    async fn release(&mut self) {
        if let Some(mut lock) = self.lock.take() {
            let released = sqlx::query("select pg_advisory_unlock_all()")
                .execute(&mut *lock)
                .await;
            if released.is_err() {
                // Closing the session releases its locks too.
                let _ = lock.detach().close().await;
            }
        }
    }

    async fn lag(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("select count(*) from range_change where move_id = $1")
            .bind(&self.mv.id)
            .fetch_one(&self.src)
            .await
    }

    /// Copies every org table's rows of the range in one source snapshot; returns the rows.
    async fn copy(&mut self) -> Result<i64, MoveError> {
        let (a, b) = (self.mv.start, self.mv.end);
        let mut src = self.src.acquire().await?;
        let mut dst = self.dst.acquire().await?;
        let mut src_tx = src.begin().await?;
        sqlx::query("set transaction isolation level repeatable read, read only")
            .execute(&mut *src_tx)
            .await?;
        let mut dst_tx = dst.begin().await?;
        let mut copied: i64 = 0;
        for t in self.tables.clone() {
            let mut out = src_tx
                .copy_out_raw(&format!(
                    "copy (select * from {} where org_id >= {a} and org_id < {b}) to stdout (format binary)",
                    t.name
                ))
                .await?;
            let mut input = dst_tx
                .copy_in_raw(&format!("copy {} from stdin (format binary)", t.name))
                .await?;
            while let Some(chunk) = out.try_next().await? {
                input.send(chunk).await?;
            }
            drop(out);
            let n = input.finish().await?;
            copied += i64::try_from(n).unwrap_or(i64::MAX);
            set_counts(self.catalog, &self.mv.id, copied, 0).await?;
            self.report().await;
        }
        dst_tx.commit().await?;
        src_tx.commit().await?;
        Ok(copied)
    }

    /// Identity sequences on the target must not hand out ids the copied rows already use.
    async fn bump_identities(&self) -> Result<(), sqlx::Error> {
        for t in &self.tables {
            for col in &t.identity {
                sqlx::query(AssertSqlSafe(format!(
                    "select setval(pg_get_serial_sequence('{t}', '{col}'),
                                   greatest((select coalesce(max({col}), 0) from {t}),
                                            (select coalesce(last_value, 0) from pg_sequences
                                              where schemaname || '.' || sequencename
                                                    = pg_get_serial_sequence('{t}', '{col}')),
                                            1))",
                    t = t.name
                )))
                .execute(&self.dst)
                .await?;
            }
        }
        Ok(())
    }

    /// Applies up to `limit` captured keys: the source's current row is upserted on the
    /// target, or deleted there when the source no longer has it. Returns the keys applied.
    async fn apply(&self, limit: i64) -> Result<usize, MoveError> {
        let changes: Vec<(i64, String, Value)> = sqlx::query_as(
            "select seq, tbl, pk from range_change where move_id = $1 order by seq limit $2",
        )
        .bind(&self.mv.id)
        .bind(limit)
        .fetch_all(&self.src)
        .await?;
        if changes.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = changes.iter().map(|c| c.0).collect();
        let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, tbl, pk) in &changes {
            keys.entry(tbl.clone()).or_default().insert(pk.to_string());
        }
        // The source's rows for those keys, in one snapshot.
        let mut present: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut absent: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        {
            let mut tx = self.src.begin().await?;
            sqlx::query("set transaction isolation level repeatable read, read only")
                .execute(&mut *tx)
                .await?;
            for t in &self.tables {
                let Some(ks) = keys.get(&t.name) else {
                    continue;
                };
                let ks: Vec<Value> = ks
                    .iter()
                    .filter_map(|k| serde_json::from_str(k).ok())
                    .collect();
                let rows: Vec<(Value, Option<Value>)> = sqlx::query_as(AssertSqlSafe(format!(
                    "select e.k, to_jsonb(s)
                       from jsonb_array_elements($1) e(k)
                       cross join lateral jsonb_populate_record(null::{t}, e.k) k
                       left join {t} s on ({sp}) = ({kp})",
                    t = t.name,
                    sp = t.pk_list("s"),
                    kp = t.pk_list("k"),
                )))
                .bind(Value::Array(ks))
                .fetch_all(&mut *tx)
                .await?;
                for (k, row) in rows {
                    match row {
                        Some(r) => present.entry(t.name.clone()).or_default().push(r),
                        None => absent.entry(t.name.clone()).or_default().push(k),
                    }
                }
            }
            tx.commit().await?;
        }
        let mut tx = self.dst.begin().await?;
        for t in &self.tables {
            let Some(rows) = present.get(&t.name) else {
                continue;
            };
            let cols: Vec<String> = sqlx::query_scalar(
                "select column_name::text from information_schema.columns
                  where table_schema = current_schema() and table_name = $1
                  order by ordinal_position",
            )
            .bind(&t.name)
            .fetch_all(&mut *tx)
            .await?;
            let rest: Vec<&String> = cols.iter().filter(|c| !t.pk.contains(c)).collect();
            let on_conflict = if rest.is_empty() {
                "do nothing".to_owned()
            } else {
                format!(
                    "do update set ({}) = row({}) where ({}) is distinct from ({})",
                    rest.iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    rest.iter()
                        .map(|c| format!("excluded.{c}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    rest.iter()
                        .map(|c| format!("{}.{c}", t.name))
                        .collect::<Vec<_>>()
                        .join(", "),
                    rest.iter()
                        .map(|c| format!("excluded.{c}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            };
            let overriding = if t.identity.is_empty() {
                ""
            } else {
                "overriding system value"
            };
            sqlx::query(AssertSqlSafe(format!(
                "insert into {t} ({cols}) {overriding}
                 select {cols} from jsonb_populate_recordset(null::{t}, $1)
                 on conflict ({pk}) {on_conflict}",
                t = t.name,
                cols = cols.join(", "),
                pk = t.pk.join(", "),
            )))
            .bind(Value::Array(rows.clone()))
            .execute(&mut *tx)
            .await?;
        }
        for t in self.tables.iter().rev() {
            let Some(ks) = absent.get(&t.name) else {
                continue;
            };
            sqlx::query(AssertSqlSafe(format!(
                "delete from {t} s using jsonb_populate_recordset(null::{t}, $1) k
                  where ({sp}) = ({kp})",
                t = t.name,
                sp = t.pk_list("s"),
                kp = t.pk_list("k"),
            )))
            .bind(Value::Array(ks.clone()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        sqlx::query("delete from range_change where move_id = $1 and seq = any($2)")
            .bind(&self.mv.id)
            .bind(&seqs)
            .execute(&self.src)
            .await?;
        Ok(seqs.len())
    }

    /// Row counts and order-independent checksums of every table, both sides. Writers of the
    /// range are paused meanwhile, so every table and both sides are read at once.
    async fn verify(&self) -> Result<(bool, Value), sqlx::Error> {
        let sums = futures::future::try_join_all(self.tables.iter().map(|t| async move {
            let sql = format!(
                "select count(*), coalesce(sum(('x' || left(md5(s::text), 16))::bit(64)::bigint::numeric), 0)::text
                   from {} s where org_id >= $1 and org_id < $2",
                t.name
            );
            let side = |pool: &PgPool| {
                let (pool, sql) = (pool.clone(), sql.clone());
                async move {
                    sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(sql))
                        .bind(self.mv.start)
                        .bind(self.mv.end)
                        .fetch_one(&pool)
                        .await
                }
            };
            let (src, dst) = futures::future::try_join(side(&self.src), side(&self.dst)).await?;
            Ok::<_, sqlx::Error>((t.name.clone(), src, dst))
        }))
        .await?;
        let mut ok = true;
        let mut tables = serde_json::Map::new();
        for (name, src, dst) in sums {
            let matches = src == dst;
            ok &= matches;
            tables.insert(
                name,
                json!({
                    "source_rows": src.0, "target_rows": dst.0,
                    "source_checksum": src.1, "target_checksum": dst.1,
                    "match": matches,
                }),
            );
        }
        Ok((ok, json!({ "ok": ok, "tables": tables })))
    }

    /// Undoes a move that did not finish: the target's rows of the range deleted, the fence
    /// and its captured keys removed (triggers too, when no other fence needs them). The map
    /// was never changed.
    async fn roll_back(&mut self) -> Result<(), MoveError> {
        let (a, b) = (self.mv.start, self.mv.end);
        if !self.fenced {
            // Nothing was written anywhere (a check refused the move).
            return Ok(());
        }
        if self.tables.is_empty() {
            self.tables = org_tables(&self.src).await?;
        }
        if !self.copied {
            remove_fence(&self.src, &self.mv.id, &self.tables).await?;
            self.release().await;
            return Ok(());
        }
        delete_range(&self.dst, &self.tables, a, b).await?;
        remove_fence(&self.src, &self.mv.id, &self.tables).await?;
        self.release().await;
        Ok(())
    }
}

/// Rows of `[a, b)` in table `t`.
async fn range_rows(pool: &PgPool, t: &Table, a: i64, b: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "select count(*) from {} where org_id >= $1 and org_id < $2",
        t.name
    )))
    .bind(a)
    .bind(b)
    .fetch_one(pool)
    .await
}

/// Deletes the rows of `[a, b)` from every table, children first. The append-only tables
/// refuse deletes by trigger (and the source's guard refuses writes to a moved range): user
/// triggers are off for the statement, the one sanctioned delete. Returns the rows deleted.
async fn delete_range(pool: &PgPool, tables: &[Table], a: i64, b: i64) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut deleted = 0;
    for t in tables.iter().rev() {
        sqlx::query(AssertSqlSafe(format!(
            "alter table {} disable trigger user",
            t.name
        )))
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(AssertSqlSafe(format!(
            "delete from {} where org_id >= {a} and org_id < {b}",
            t.name
        )))
        .execute(&mut *tx)
        .await?;
        deleted += i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        sqlx::query(AssertSqlSafe(format!(
            "alter table {} enable trigger user",
            t.name
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// Removes a move's fence from the source, and the guard triggers once no fence is left.
async fn remove_fence(src: &PgPool, id: &str, tables: &[Table]) -> Result<(), sqlx::Error> {
    let mut tx = src.begin().await?;
    sqlx::query("delete from range_fence where move_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from range_change where move_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let left: i64 = sqlx::query_scalar("select count(*) from range_fence")
        .fetch_one(&mut *tx)
        .await?;
    if left == 0 {
        for t in tables {
            sqlx::query(AssertSqlSafe(format!(
                "drop trigger if exists range_fence_guard on {}",
                t.name
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Waits until no transaction that began before `since` is still open on the source, except
/// those waiting for the move's advisory lock (the paused writers) and `holder` itself.
async fn wait_for_older(
    src: &PgPool,
    since: DateTime<Utc>,
    holder: Option<i32>,
) -> Result<(), MoveError> {
    let started = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
              where datname = current_database()
                and pid <> pg_backend_pid() and pid <> coalesce($2, 0)
                and xact_start is not null and xact_start < $1
                and not (wait_event_type = 'Lock' and wait_event = 'advisory')",
        )
        .bind(since)
        .bind(holder)
        .fetch_one(src)
        .await?;
        if open == 0 {
            return Ok(());
        }
        if started.elapsed() > DRAIN_LIMIT {
            return Err(MoveError::Drain(format!(
                "{open} transactions older than the fence still open after {DRAIN_LIMIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both shards must have applied exactly the same migrations (rows are copied column by
/// column).
async fn same_schema(src: &PgPool, dst: &PgPool) -> Result<(), MoveError> {
    let read = |pool: &PgPool| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64, Vec<u8>)>(
                "select version, checksum from _sqlx_migrations where success order by version",
            )
            .fetch_all(&pool)
            .await
        }
    };
    let (s, d) = (read(src).await?, read(dst).await?);
    let latest: Vec<i64> = SHARD.iter().map(|m| m.version).collect();
    if s != d {
        return Err(MoveError::SchemaDrift(
            "the source and target have applied different migrations (run `control-plane migrate`)"
                .into(),
        ));
    }
    if s.iter().map(|m| m.0).collect::<Vec<_>>() != latest {
        return Err(MoveError::SchemaDrift(
            "the shards are not at this build's migrations (run `control-plane migrate`)".into(),
        ));
    }
    Ok(())
}

/// Gives `[start, end)` to the target in the catalog: the range holding it is split in up to
/// three, each keeping the ids already handed out.
async fn switch_ranges(runner: &mut PgConnection, mv: &MoveStatus) -> Result<(), MoveError> {
    let mut tx = runner.begin().await?;
    match switch_in(&mut tx, mv).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(())
        }
        Err(e) => {
            // Rolled back now: a dropped transaction is rolled back only when its connection
            // is next used, and until then its row lock on the move would block the runner's
            // own update of it.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn switch_in(tx: &mut PgConnection, mv: &MoveStatus) -> Result<(), MoveError> {
    let (a, b) = (mv.start, mv.end);
    // A move that another process has ended (recovered) stays ended.
    let phase: String = sqlx::query_scalar("select phase from shard_move where id = $1 for update")
        .bind(&mv.id)
        .fetch_one(&mut *tx)
        .await?;
    if matches!(phase.as_str(), "done" | "rolled_back" | "failed") {
        return Err(MoveError::Finished(phase));
    }
    let row: Option<(i64, i64, String, i64, bool)> = sqlx::query_as(
        "select range_start, range_end, shard, next_id, open from shard_range
          where range_start <= $1 and range_end >= $2 for update",
    )
    .bind(a)
    .bind(b)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((start, end, shard, next, open)) = row else {
        return Err(MoveError::NotOneRange(a, b));
    };
    if shard != mv.from_shard {
        return Err(MoveError::NotOneRange(a, b));
    }
    sqlx::query("delete from shard_range where range_start = $1")
        .bind(start)
        .execute(&mut *tx)
        .await?;
    let mut pieces = vec![(a, b, mv.to_shard.clone(), next.clamp(a, b))];
    if start < a {
        pieces.push((start, a, shard.clone(), next.clamp(start, a)));
    }
    if b < end {
        pieces.push((b, end, shard.clone(), next.clamp(b, end)));
    }
    for (s, e, owner, n) in pieces {
        sqlx::query(
            "insert into shard_range (range_start, range_end, shard, next_id, open)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(s)
        .bind(e)
        .bind(owner)
        .bind(n)
        .bind(open)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Drops the source's copy of a finished move's range (kept until now for the operator), and
/// the fence that kept stale writers off it.
pub async fn drop_source(catalog: &PgPool, id: &str) -> Result<i64, MoveError> {
    let mv = get(catalog, id)
        .await?
        .ok_or_else(|| MoveError::UnknownMove(id.to_owned()))?;
    if mv.phase != "done" {
        return Err(MoveError::NotDone(mv.phase));
    }
    if mv.source_dropped {
        return Ok(0);
    }
    let src = side_pool(catalog, &mv.from_shard).await?;
    let tables = org_tables(&src).await?;
    let dropped = delete_range(&src, &tables, mv.start, mv.end).await?;
    remove_fence(&src, id, &tables).await?;
    src.close().await;
    sqlx::query("update shard_move set source_dropped = true, updated_at = now() where id = $1")
        .bind(id)
        .execute(catalog)
        .await?;
    Ok(dropped)
}

/// What [`recover`] did with a move whose runner stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovered {
    /// The catalog had already switched: the move is recorded as done.
    Completed,
    /// It had not: the target's rows and the fence were removed, the move is `failed`.
    RolledBack,
}

/// A move left unfinished by a runner that stopped (the process died mid-move) stays in its
/// phase with writes possibly paused. This finishes it when the catalog already gives the
/// range to the target, and rolls it back otherwise. A move whose runner still holds its
/// runner lock is left alone, and so, unless `force`, is one that reported progress in the
/// last `stale_after` (it may be between being planned and being run).
pub async fn recover(
    catalog: &PgPool,
    id: &str,
    stale_after: Duration,
    force: bool,
) -> Result<Recovered, MoveError> {
    let Some(runner) = runner_lock(catalog, id).await? else {
        return Err(MoveError::Busy(format!("{id} (its runner is alive)")));
    };
    let out = recover_locked(catalog, id, stale_after, force).await;
    release_runner(runner).await;
    out
}

async fn recover_locked(
    catalog: &PgPool,
    id: &str,
    stale_after: Duration,
    force: bool,
) -> Result<Recovered, MoveError> {
    let mv = get(catalog, id)
        .await?
        .ok_or_else(|| MoveError::UnknownMove(id.to_owned()))?;
    if mv.finished() {
        return Err(MoveError::Finished(mv.phase));
    }
    // By the catalog's clock, which wrote `updated_at`.
    let idle: f64 = sqlx::query_scalar(
        "select greatest(extract(epoch from now() - updated_at)::float8, 0) from shard_move
          where id = $1",
    )
    .bind(id)
    .fetch_one(catalog)
    .await?;
    let idle = Duration::from_secs_f64(idle);
    if !force && idle < stale_after {
        return Err(MoveError::Busy(format!(
            "{id} (progress {}s ago; wait, or force)",
            idle.as_secs()
        )));
    }
    let owner: Option<String> = sqlx::query_scalar(
        "select shard from shard_range where range_start <= $1 and range_end >= $2",
    )
    .bind(mv.start)
    .bind(mv.end)
    .fetch_optional(catalog)
    .await?;
    let src = side_pool(catalog, &mv.from_shard).await?;
    let outcome = if owner.as_deref() == Some(mv.to_shard.as_str()) {
        sqlx::query("update range_fence set state = 'moved' where move_id = $1")
            .bind(id)
            .execute(&src)
            .await?;
        Recovered::Completed
    } else {
        let dst = side_pool(catalog, &mv.to_shard).await?;
        let mut mover = Mover {
            catalog,
            mv: mv.clone(),
            src: src.clone(),
            dst: dst.clone(),
            tables: Vec::new(),
            progress: &|_| {},
            runner: None,
            lock: None,
            fenced: true,
            // The target held none of the range when the move began (checked before the copy),
            // so whatever it holds now came from this move.
            copied: mv.phase != "pending",
        };
        mover.roll_back().await?;
        dst.close().await;
        Recovered::RolledBack
    };
    src.close().await;
    let (phase, error) = match outcome {
        Recovered::Completed => ("done", None),
        Recovered::RolledBack => ("failed", Some("its runner stopped; rolled back by recover")),
    };
    sqlx::query(
        "update shard_move set phase = $2, error = coalesce($3, error), updated_at = now(),
                finished_at = now() where id = $1",
    )
    .bind(id)
    .bind(phase)
    .bind(error)
    .execute(catalog)
    .await?;
    Ok(outcome)
}

/// Longest a runner waits for its move's runner lock (a recovery looking at the move holds it
/// for a moment).
const RUNNER_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Makes PostgreSQL notice within about 25 s that the client of a session holding a move's
/// lock is gone (its host died, the network parted), rather than after the system's TCP
/// keepalive default of two hours: the session, and its locks, end with it.
async fn keep_alive(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "select set_config('tcp_keepalives_idle', '10', false),
                set_config('tcp_keepalives_interval', '5', false),
                set_config('tcp_keepalives_count', '3', false)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How long a move nobody runs must have been idle before [`recover_abandoned`] takes it: far
/// longer than the moment between a move being planned and its runner taking it.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(30);

/// Takes the catalog's session lock that marks move `id` as being run (or recovered); `None`
/// when another session holds it. The connection leaves the pool, so the lock lasts as long as
/// it: until it is closed, or until the process holding it dies and PostgreSQL ends the session.
async fn runner_lock(catalog: &PgPool, id: &str) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = catalog.acquire().await?.detach();
    keep_alive(&mut conn).await?;
    let held: bool = sqlx::query_scalar(
        "select pg_try_advisory_lock(hashtextextended('shard_move_runner:' || $1, 0))",
    )
    .bind(id)
    .fetch_one(&mut conn)
    .await?;
    if held {
        Ok(Some(conn))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

/// Gives back a session taken by [`runner_lock`]. The lock is released explicitly before the
/// session is closed: a closed session's locks go only when its server process has noticed and
/// exited, a moment later, so the next runner or recovery could otherwise find the move busy.
async fn release_runner(mut conn: PgConnection) {
    let _ = sqlx::query("select pg_advisory_unlock_all()")
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
}

/// Recovers (see [`recover`]) every unfinished move whose runner is gone and that has shown no
/// progress for [`ABANDONED_AFTER`]: what a process that died mid-move, or was stopped, left
/// behind. Each control plane calls it on a schedule, so a paused range never waits for an
/// operator. Returns what it did to which move; moves still running are not listed.
pub async fn recover_abandoned(
    catalog: &PgPool,
) -> Result<Vec<(String, Result<Recovered, MoveError>)>, sqlx::Error> {
    let unfinished: Vec<String> = sqlx::query_scalar(
        "select id from shard_move
          where phase not in ('done', 'rolled_back', 'failed')
            and updated_at < now() - make_interval(secs => $1)
          order by created_at",
    )
    .bind(ABANDONED_AFTER.as_secs_f64())
    .fetch_all(catalog)
    .await?;
    let mut done = Vec::new();
    for id in unfinished {
        match recover(catalog, &id, ABANDONED_AFTER, false).await {
            Err(MoveError::Busy(_) | MoveError::Finished(_)) => {}
            outcome => done.push((id, outcome)),
        }
    }
    Ok(done)
}
