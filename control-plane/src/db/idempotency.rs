//! `idempotency_key`: the first result of a creating request, replayed for repeats with the
//! same `Idempotency-Key`.

use sqlx::PgPool;

/// What to do with a request carrying an idempotency key.
#[derive(Debug, PartialEq)]
pub enum Begin {
    /// First time: run it, then [`complete`] (or [`abandon`] on a retryable failure).
    Fresh,
    /// Seen and finished: answer with the stored result.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
    /// Seen and still running.
    InProgress,
    /// Seen with a different request body.
    Mismatch,
}

pub async fn begin(
    catalog: &PgPool,
    scope: &str,
    key: &str,
    request_hash: &[u8],
) -> Result<Begin, sqlx::Error> {
    let inserted = sqlx::query!(
        "insert into idempotency_key (scope, key, request_hash) values ($1, $2, $3)
         on conflict (scope, key) do nothing",
        scope,
        key,
        request_hash
    )
    .execute(catalog)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Begin::Fresh);
    }
    let row = sqlx::query!(
        "select request_hash, status, body from idempotency_key where scope = $1 and key = $2",
        scope,
        key
    )
    .fetch_one(catalog)
    .await?;
    Ok(if row.request_hash != request_hash {
        Begin::Mismatch
    } else {
        match (row.status, row.body) {
            (Some(status), Some(body)) => Begin::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
            _ => Begin::InProgress,
        }
    })
}

pub async fn complete(
    catalog: &PgPool,
    scope: &str,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update idempotency_key set status = $3, body = $4 where scope = $1 and key = $2",
        scope,
        key,
        i16::try_from(status).unwrap_or(500),
        body
    )
    .execute(catalog)
    .await?;
    Ok(())
}

/// Forgets a key whose request failed in a way worth retrying.
pub async fn abandon(catalog: &PgPool, scope: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from idempotency_key where scope = $1 and key = $2",
        scope,
        key
    )
    .execute(catalog)
    .await?;
    Ok(())
}
