//! List queries built from optional filters: conditions are appended with
//! `$n` placeholders numbered as their values are bound, and the page is
//! the newest-first keyset page of [`crate::paging`].

use sqlx::AnyPool;
use sqlx::any::AnyRow;

use crate::paging::Cursor;

/// A value bound to a placeholder (the types the `Any` driver carries).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

/// A `SELECT … WHERE …` growing one condition at a time.
#[derive(Debug, Clone)]
pub struct ListQuery {
    sql: String,
    values: Vec<Value>,
}

impl ListQuery {
    /// `select` ends in a `WHERE` whose first condition uses `$1`, bound to `first`.
    pub fn new(select: impl Into<String>, first: impl Into<Value>) -> Self {
        Self {
            sql: select.into(),
            values: vec![first.into()],
        }
    }

    /// Binds `value`; returns its placeholder (`$n`) for the SQL.
    pub fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    /// Appends SQL (e.g. ` AND folder = $2`).
    pub fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    /// Newest first by `(created_at_ms, id_column)`, after `cursor`, one row
    /// more than `page_size` (for [`crate::paging::split_page`]).
    pub fn newest_first_page(&mut self, id_column: &str, after: Option<&Cursor>, page_size: u32) {
        self.newest_first_page_by("created_at_ms", id_column, after, page_size);
    }

    /// [`newest_first_page`](Self::newest_first_page) on another time column.
    pub fn newest_first_page_by(
        &mut self,
        time_column: &str,
        id_column: &str,
        after: Option<&Cursor>,
        page_size: u32,
    ) {
        if let Some(cursor) = after {
            let t = self.bind(cursor.time_ms);
            let i = self.bind(cursor.id.clone());
            self.push(&format!(
                " AND ({time_column} < {t} OR ({time_column} = {t} AND {id_column} < {i}))"
            ));
        }
        let limit = self.bind(i64::from(page_size) + 1);
        self.push(&format!(
            " ORDER BY {time_column} DESC, {id_column} DESC LIMIT {limit}"
        ));
    }

    pub async fn fetch_all<T>(self, pool: &AnyPool) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
    {
        let mut query = sqlx::query_as::<_, T>(&self.sql);
        for value in self.values {
            query = match value {
                Value::Text(s) => query.bind(s),
                Value::Int(i) => query.bind(i),
            };
        }
        query.fetch_all(pool).await
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_bound_values() {
        let mut q = ListQuery::new("SELECT x FROM t WHERE org_id = $1", "acme");
        let p = q.bind("a");
        q.push(&format!(" AND a = {p}"));
        q.newest_first_page(
            "id",
            Some(&Cursor {
                time_ms: 5,
                id: "z".into(),
            }),
            10,
        );
        assert_eq!(
            q.sql(),
            "SELECT x FROM t WHERE org_id = $1 AND a = $2 AND (created_at_ms < $3 OR (created_at_ms = $3 AND id < $4)) ORDER BY created_at_ms DESC, id DESC LIMIT $5"
        );
        assert_eq!(q.values.last(), Some(&Value::Int(11)));
    }
}
