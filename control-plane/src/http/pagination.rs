//! List pagination: `?limit=` (default 50, at most 500) and an opaque `?cursor=`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, FieldError};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub fn limit(requested: Option<i64>) -> Result<i64, Error> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Error::Invalid(vec![FieldError::new(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        )])),
    }
}

/// Encodes a keyset position as an opaque cursor.
pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Decodes a cursor made by [`encode`]; anything else is a `422` on `cursor`.
pub fn decode<T: DeserializeOwned>(cursor: &str) -> Result<T, Error> {
    let bad = || {
        Error::Invalid(vec![FieldError::new(
            "cursor",
            "not a cursor returned by this list",
        )])
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
pub fn page<R, T, P: Serialize>(
    mut rows: Vec<R>,
    limit: i64,
    position: impl Fn(&R) -> P,
    out: impl Fn(R) -> T,
) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(|r| encode(&position(r)))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(out).collect(),
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(1)).unwrap(), 1);
        assert_eq!(limit(Some(500)).unwrap(), 500);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(501)).is_err());
        assert!(limit(Some(-3)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode(&("2026-01-01T00:00:00Z", "job_1"));
        let back: (String, String) = decode(&c).unwrap();
        assert_eq!(back.1, "job_1");
        assert!(decode::<(String, String)>("not a cursor").is_err());
        assert!(decode::<(String, String)>(&encode(&42)).is_err());
    }

    #[test]
    fn a_page_has_a_cursor_only_when_there_is_more() {
        let p = page(vec![1, 2, 3], 2, |r| *r, |r| r * 10);
        assert_eq!(p.items, vec![10, 20]);
        assert_eq!(decode::<i32>(p.next_cursor.as_deref().unwrap()).unwrap(), 2);
        let p = page(vec![1, 2], 2, |r| *r, |r| r);
        assert!(p.next_cursor.is_none());
    }
}
