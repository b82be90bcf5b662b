//! `app_user`: people, identified by email.

use sqlx::PgConnection;

/// The user with `email`, created if new. Returns the user id.
pub async fn upsert(conn: &mut PgConnection, email: &str) -> Result<String, sqlx::Error> {
    let id = format!("usr_{}", uuid::Uuid::new_v4().simple());
    sqlx::query_scalar!(
        "insert into app_user (id, email) values ($1, $2)
         on conflict (email) do update set email = excluded.email
         returning id",
        id,
        email
    )
    .fetch_one(conn)
    .await
}
