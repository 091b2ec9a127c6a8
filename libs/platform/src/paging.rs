//! Cursor pagination and time conversions shared by every list API.
//!
//! Lists are ordered newest first by `(time_ms, id)`; the page token is the
//! position of the last item returned, `"<time_ms>.<id>"`, so a page never
//! repeats or skips an item even while new ones arrive.

use crate::errors::{FieldViolation, ServiceError};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 200;

/// The page size to use: the default when 0, at most [`MAX_PAGE_SIZE`].
pub fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// The position after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time_ms, self.id)
    }

    /// `None` for an empty token; INVALID_ARGUMENT for a malformed one.
    pub fn decode(token: &str, field: &str) -> Result<Option<Cursor>, ServiceError> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            ServiceError::invalid(vec![FieldViolation::new(
                field,
                "is not a page token from this API",
            )])
        };
        let (time, id) = token.split_once('.').ok_or_else(invalid)?;
        let time_ms = time.parse().map_err(|_| invalid())?;
        if id.is_empty() || id.len() > 128 {
            return Err(invalid());
        }
        Ok(Some(Cursor {
            time_ms,
            id: id.to_owned(),
        }))
    }
}

/// Splits rows fetched with `LIMIT page_size + 1` into the page and, when
/// more rows follow, the cursor after the page's last item.
pub fn split_page<T>(
    mut rows: Vec<T>,
    page_size: u32,
    cursor_of: impl Fn(&T) -> Cursor,
) -> (Vec<T>, Option<Cursor>) {
    let size = page_size as usize;
    if rows.len() > size {
        rows.truncate(size);
        let next = rows.last().map(cursor_of);
        (rows, next)
    } else {
        (rows, None)
    }
}

pub fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn ms_from_timestamp(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            time_ms: 1_700_000_000_123,
            id: "0192-ab.c".into(),
        };
        assert_eq!(
            Cursor::decode(&cursor.encode(), "page_token").unwrap(),
            Some(cursor)
        );
        assert_eq!(Cursor::decode("", "page_token").unwrap(), None);
        for bad in ["x", "12", "abc.def", "1."] {
            assert!(Cursor::decode(bad, "page_token").is_err(), "{bad}");
        }
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(10_000), MAX_PAGE_SIZE);
    }

    #[test]
    fn timestamps_convert_both_ways() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(ms_from_timestamp(Some(&timestamp_from_ms(ms))), ms);
        }
    }
}
