//! The overshoot bound of hard budgets, with threads as replicas: each
//! replica takes credit from one shared allocator (the aggregate, here
//! behind a mutex standing for its optimistic concurrency) and admits
//! runs from its own meter. Whatever the interleaving, use stays within
//! limit + Σ max(0, actual − reserved), and after every replica returns
//! its credit the allocator holds exactly what was used.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "an integration test: a panic is a failed assertion"
)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use promptops_account::credit::{CreditEvent, CreditState, Meter, chunk, decide_grant, evolve};
use promptops_proto::execution::v1::BudgetCreditReturned;
use rand::{Rng as _, SeedableRng as _};

struct Totals {
    used: AtomicI64,
    excess: AtomicI64,
    admitted: AtomicI64,
}

fn burst(replicas: usize, runs_each: usize, limit: i64, baseline: i64, excess_every: u64, seed: u64) {
    let allocator = Arc::new(Mutex::new(CreditState::default()));
    let totals = Arc::new(Totals {
        used: AtomicI64::new(0),
        excess: AtomicI64::new(0),
        admitted: AtomicI64::new(0),
    });
    let threads: Vec<_> = (0..replicas)
        .map(|r| {
            let allocator = allocator.clone();
            let totals = totals.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed + r as u64);
                let meter = Meter::default();
                let replica = format!("r{r}");
                let mut in_flight: Vec<(i64, i64)> = Vec::new();
                for i in 0..runs_each {
                    let reserved = rng.gen_range(1..=40);
                    if !meter.try_reserve(reserved) {
                        let mut state = allocator.lock().unwrap();
                        match decide_grant(
                            *state,
                            &replica,
                            chunk(limit, reserved),
                            reserved,
                            limit,
                            baseline,
                        ) {
                            Ok(granted) => {
                                meter.add(granted.amount);
                                *state = evolve(*state, &CreditEvent::Granted(granted));
                            }
                            Err(_) => continue,
                        }
                        drop(state);
                        if !meter.try_reserve(reserved) {
                            continue;
                        }
                    }
                    totals.admitted.fetch_add(1, Ordering::Relaxed);
                    let mut actual = rng.gen_range(0..=reserved);
                    if excess_every > 0 && (i as u64).is_multiple_of(excess_every) {
                        actual = reserved + 3;
                        totals.excess.fetch_add(3, Ordering::Relaxed);
                    }
                    in_flight.push((reserved, actual));
                    // Runs end out of order, some while others start.
                    if in_flight.len() > 4 || rng.gen_bool(0.3) {
                        let (reserved, actual) = in_flight.swap_remove(rng.gen_range(0..in_flight.len()));
                        meter.settle(reserved, actual);
                        totals.used.fetch_add(actual, Ordering::Relaxed);
                    }
                    std::thread::yield_now();
                }
                for (reserved, actual) in in_flight {
                    meter.settle(reserved, actual);
                    totals.used.fetch_add(actual, Ordering::Relaxed);
                }
                let returned = meter.take_all();
                let mut state = allocator.lock().unwrap();
                *state = evolve(
                    *state,
                    &CreditEvent::Returned(BudgetCreditReturned {
                        replica_id: replica,
                        amount: returned,
                    }),
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let used = totals.used.load(Ordering::Relaxed);
    let excess = totals.excess.load(Ordering::Relaxed);
    assert!(
        baseline + used <= limit + excess,
        "{replicas} replicas used {used} (+{baseline} before) of {limit} with {excess} excess"
    );
    assert!(totals.admitted.load(Ordering::Relaxed) > 0);
    // Exact accounting: what is handed out and not returned is what was used.
    let allocated = allocator.lock().unwrap().allocated.unwrap_or(baseline);
    assert_eq!(allocated, baseline + used);
}

#[test]
fn use_never_exceeds_the_limit_when_runs_stay_within_their_reservation() {
    for seed in 0..20 {
        burst(4, 2_000, 10_000, 0, 0, seed * 10);
        burst(2, 500, 1_000, 600, 0, seed * 10 + 5);
    }
}

#[test]
fn use_exceeds_the_limit_by_no_more_than_the_runs_excess() {
    for seed in 0..20 {
        burst(3, 2_000, 5_000, 0, 7, seed);
    }
}

#[test]
fn the_budget_is_used_up_not_stranded() {
    // One replica alone gets to within one run of the limit.
    let allocator = Mutex::new(CreditState::default());
    let meter = Meter::default();
    let limit = 1_000;
    let mut used = 0;
    for _ in 0..2_000 {
        if !meter.try_reserve(10) {
            let mut state = allocator.lock().unwrap();
            let Ok(g) = decide_grant(*state, "r", chunk(limit, 10), 10, limit, 0) else {
                break;
            };
            meter.add(g.amount);
            *state = evolve(*state, &CreditEvent::Granted(g));
            assert!(meter.try_reserve(10));
        }
        meter.settle(10, 10);
        used += 10;
    }
    assert_eq!(used, limit);
}
