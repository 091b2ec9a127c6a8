//! Hard budgets across replicas: credit handed out by an event-sourced
//! allocator, spent locally without a round trip.
//!
//! Each hard budget has, per period, a credit aggregate in the execution
//! stream (`budget_credit.<budget>-<period start>`). A replica takes a chunk
//! of credit from it ([`decide_grant`]: appended with the expected sequence,
//! so two replicas can never both take the last of it) and then admits runs
//! by reserving from its [`Meter`], an atomic counter: the hot path is one
//! compare-and-swap. A run reserves its worst case (the input tokens counted
//! before the call and the most output it may write, at the run's prices)
//! and settles its real use when it ends; unused credit goes back to the
//! aggregate when the replica idles or stops.
//!
//! **The bound.** Credit handed out never exceeds the limit (the aggregate
//! refuses), a replica admits a run only while it holds the run's
//! reservation, and a run uses at most its reservation, except where the
//! provider reports more input tokens than were counted. So for a period:
//!
//! > use ≤ limit + Σ over runs of max(0, actual − reserved)
//!
//! whatever the number of replicas and the concurrency, and with exact
//! input counts (OpenAI's tokenizer, the mock) the excess term is 0.
//! Tested in `tests/bound.rs` (threads as replicas) and end to end with two
//! execution replicas on JetStream. The price of the bound is undershoot: a
//! run can be refused while other replicas hold unused credit (at most one
//! chunk, [`chunk`], each, until they idle), and a replica killed without
//! stopping keeps its unused credit out of the period.

use std::sync::atomic::{AtomicI64, Ordering};

use promptops_proto::execution::v1::{BudgetCreditGranted, BudgetCreditReturned};

pub const AGGREGATE_TYPE: &str = "budget_credit";
pub const GRANTED: &str = "promptops.execution.v1.BudgetCreditGranted";
pub const RETURNED: &str = "promptops.execution.v1.BudgetCreditReturned";

/// The credit aggregate's id: `<budget>-<period start ms>`.
pub fn aggregate_id(budget_id: &str, period_start_ms: i64) -> String {
    format!("{budget_id}-{period_start_ms}")
}

/// What the aggregate knows: credit handed out and not returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreditState {
    /// `None` before the first grant: the period's baseline applies then.
    pub allocated: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreditEvent {
    Granted(BudgetCreditGranted),
    Returned(BudgetCreditReturned),
}

pub fn evolve(mut state: CreditState, event: &CreditEvent) -> CreditState {
    state.allocated = Some(match event {
        CreditEvent::Granted(g) => g.allocated,
        CreditEvent::Returned(r) => state.allocated.unwrap_or(0).saturating_sub(r.amount),
    });
    state
}

/// The chunk a replica asks for: a twentieth of the limit, and at least
/// what the run at hand needs.
pub fn chunk(limit: i64, need: i64) -> i64 {
    (limit / 20).max(1).max(need)
}

/// Why no credit was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{available} of the budget is left to hand out; {need} is needed")]
pub struct Exhausted {
    pub available: i64,
    pub need: i64,
}

/// Grants `want` (or what is left, if that still covers `need`) of a budget
/// of `limit`, whose period had used `baseline` before the budget existed.
pub fn decide_grant(
    state: CreditState,
    replica_id: &str,
    want: i64,
    need: i64,
    limit: i64,
    baseline: i64,
) -> Result<BudgetCreditGranted, Exhausted> {
    let allocated = state.allocated.unwrap_or(baseline);
    let available = limit.saturating_sub(allocated).max(0);
    let amount = want.min(available);
    if amount < need || amount <= 0 {
        return Err(Exhausted { available, need });
    }
    Ok(BudgetCreditGranted {
        replica_id: replica_id.to_owned(),
        amount,
        allocated: allocated + amount,
    })
}

/// A replica's credit for one budget and period: the hot-path counter.
#[derive(Debug, Default)]
pub struct Meter {
    credit: AtomicI64,
    /// Runs reserved and not settled (for returning credit only when idle).
    in_flight: AtomicI64,
}

impl Meter {
    /// Takes `units` of the credit if it holds them: one compare-and-swap.
    pub fn try_reserve(&self, units: i64) -> bool {
        let mut current = self.credit.load(Ordering::Acquire);
        loop {
            if current < units {
                return false;
            }
            match self.credit.compare_exchange_weak(
                current,
                current - units,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.in_flight.fetch_add(1, Ordering::AcqRel);
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }

    /// A reserved run ended having used `actual`: the rest of its
    /// reservation is credit again (an excess is taken from it).
    pub fn settle(&self, reserved: i64, actual: i64) {
        self.credit.fetch_add(reserved - actual, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn add(&self, granted: i64) {
        self.credit.fetch_add(granted, Ordering::AcqRel);
    }

    pub fn credit(&self) -> i64 {
        self.credit.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes every unit of credit (to return it); negative after an excess.
    pub fn take_all(&self) -> i64 {
        self.credit.swap(0, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_stop_at_the_limit_counting_the_baseline() {
        let s = CreditState::default();
        let g = decide_grant(s, "r1", 50, 10, 100, 30).unwrap();
        assert_eq!((g.amount, g.allocated), (50, 80));
        let s = evolve(s, &CreditEvent::Granted(g));
        // 20 left: a run needing 10 gets 20; one needing 30 gets nothing.
        let g = decide_grant(s, "r2", 50, 10, 100, 30).unwrap();
        assert_eq!(g.amount, 20);
        assert_eq!(
            decide_grant(s, "r2", 50, 30, 100, 30),
            Err(Exhausted {
                available: 20,
                need: 30
            })
        );
        let s = evolve(s, &CreditEvent::Granted(g));
        assert!(decide_grant(s, "r2", 1, 1, 100, 0).is_err());
        // Returned credit can be granted again.
        let s = evolve(
            s,
            &CreditEvent::Returned(BudgetCreditReturned {
                replica_id: "r1".into(),
                amount: 15,
            }),
        );
        assert_eq!(s.allocated, Some(85));
        assert_eq!(decide_grant(s, "r3", 50, 1, 100, 0).unwrap().amount, 15);
    }

    #[test]
    fn a_meter_reserves_only_what_it_holds_and_settles_the_rest_back() {
        let m = Meter::default();
        assert!(!m.try_reserve(1));
        m.add(10);
        assert!(m.try_reserve(7));
        assert!(!m.try_reserve(4));
        m.settle(7, 2);
        assert_eq!(m.credit(), 8);
        assert_eq!(m.in_flight(), 0);
        assert!(m.try_reserve(8));
        m.settle(8, 9);
        assert_eq!(m.take_all(), -1);
        assert_eq!(chunk(1_000, 3), 50);
        assert_eq!(chunk(1_000, 80), 80);
        assert_eq!(chunk(5, 1), 1);
    }
}
