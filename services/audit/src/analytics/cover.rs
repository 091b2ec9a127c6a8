//! Time buckets, and covering a range with as few of them as possible:
//! whole days, then whole hours, then minutes at the edges. Ranges resolve
//! to whole minutes (from rounded down, to rounded up); ranges longer than
//! [`MINUTE_EDGES_UP_TO`] to whole hours, which keeps a 30-day dashboard to
//! ~80 rows per prompt version and model. Pure.

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Granularity::Minute => MINUTE_MS,
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }

    /// The start of the bucket holding `ms` (UTC).
    pub fn floor(self, ms: i64) -> i64 {
        ms.div_euclid(self.millis()) * self.millis()
    }

    pub fn ceil(self, ms: i64) -> i64 {
        let f = self.floor(ms);
        if f == ms { ms } else { f + self.millis() }
    }

    /// The granularity of a time series over `span_ms`: ≤ 6 h minutes,
    /// ≤ 14 days hours, else days.
    pub fn for_span(span_ms: i64) -> Self {
        if span_ms <= 6 * HOUR_MS {
            Granularity::Minute
        } else if span_ms <= 14 * DAY_MS {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }
}

/// `[start, end)` of bucket starts at one granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub granularity: Granularity,
    pub start: i64,
    pub end: i64,
}

/// The longest range answered to the minute.
pub const MINUTE_EDGES_UP_TO: i64 = 7 * DAY_MS;

/// The edges a range resolves to: whole minutes, or whole hours beyond
/// [`MINUTE_EDGES_UP_TO`].
pub fn resolve(from_ms: i64, to_ms: i64) -> (i64, i64) {
    let edge = if to_ms - from_ms > MINUTE_EDGES_UP_TO {
        Granularity::Hour
    } else {
        Granularity::Minute
    };
    (edge.floor(from_ms), edge.ceil(to_ms))
}

/// Disjoint spans of buckets that together cover `[from, to)` as
/// [`resolve`]d, exactly.
pub fn cover(from_ms: i64, to_ms: i64) -> Vec<Span> {
    let (from, to) = resolve(from_ms, to_ms);
    let mut spans = Vec::new();
    if to <= from {
        return spans;
    }
    let days = (Granularity::Day.ceil(from), Granularity::Day.floor(to));
    let hours = (Granularity::Hour.ceil(from), Granularity::Hour.floor(to));
    let mut push = |granularity, start: i64, end: i64| {
        if start < end {
            spans.push(Span {
                granularity,
                start,
                end,
            });
        }
    };
    if days.0 < days.1 {
        push(Granularity::Day, days.0, days.1);
        push(Granularity::Hour, hours.0, days.0);
        push(Granularity::Hour, days.1, hours.1);
    } else if hours.0 < hours.1 {
        push(Granularity::Hour, hours.0, hours.1);
    }
    if hours.0 < hours.1 {
        push(Granularity::Minute, from, hours.0);
        push(Granularity::Minute, hours.1, to);
    } else {
        push(Granularity::Minute, from, to);
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(spans: &[Span]) -> Vec<(i64, i64)> {
        let mut parts: Vec<(i64, i64)> = spans.iter().map(|s| (s.start, s.end)).collect();
        parts.sort();
        parts
    }

    #[test]
    fn a_range_is_covered_exactly_and_without_overlap() {
        for (from, to) in [
            (0, 30 * DAY_MS),
            (7 * MINUTE_MS + 5, 3 * DAY_MS + 2 * HOUR_MS + 9 * MINUTE_MS),
            (HOUR_MS - MINUTE_MS, HOUR_MS + MINUTE_MS),
            (5 * MINUTE_MS, 9 * MINUTE_MS),
            (23 * HOUR_MS, 26 * HOUR_MS),
            (-DAY_MS - 7 * MINUTE_MS, DAY_MS + 7),
        ] {
            let spans = cover(from, to);
            let parts = covered(&spans);
            assert_eq!(
                parts.first().unwrap().0,
                Granularity::Minute.floor(from),
                "{from}..{to}"
            );
            assert_eq!(
                parts.last().unwrap().1,
                Granularity::Minute.ceil(to),
                "{from}..{to}"
            );
            for pair in parts.windows(2) {
                assert_eq!(pair[0].1, pair[1].0, "{from}..{to}: {spans:?}");
            }
            for span in &spans {
                assert_eq!(span.start % span.granularity.millis(), 0);
                assert_eq!(span.end % span.granularity.millis(), 0);
            }
        }
    }

    #[test]
    fn thirty_days_take_few_buckets() {
        let spans = cover(5 * MINUTE_MS, 30 * DAY_MS + 5 * MINUTE_MS);
        let buckets: i64 = spans
            .iter()
            .map(|s| (s.end - s.start) / s.granularity.millis())
            .sum();
        assert!(buckets < 30 + 2 * 24 + 2 * 60, "{buckets}");
    }
}
