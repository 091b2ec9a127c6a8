//! The org's billing account as this replica holds it: prices and hard
//! budgets on the hot path, with no round trip to another service.
//!
//! [`Accounts`] folds the billing service's `account` aggregate of each org
//! into an in-process cache, dropped for an org whenever the billing stream
//! shows a change to it (and after a minute in any case). A run is priced
//! from it when prepared ([`Accounts::priced`]) and admitted against the
//! org's hard budgets ([`Accounts::admit`]): a compare-and-swap on this
//! replica's credit for each budget that applies, credit being taken from
//! the budget's credit aggregate in chunks (see
//! [`promptops_account::credit`] for the protocol and its bound).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use promptops_account::account::{self, Account, AccountState};
use promptops_account::budget::{self, Payer};
use promptops_account::credit::{self, CreditEvent, CreditState, Exhausted, Meter};
use promptops_eventlog::aggregate::{Aggregate, ExecuteError, execute, load};
use promptops_eventlog::{AggregateRef, Context, EventDraft, EventEnvelope, EventLog, EventMetadata, Start};
use promptops_platform::errors::{ErrorClass, ServiceError};
use promptops_proto::billing::v1::{Budget, BudgetMetric, BudgetPeriod};
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::execution::v1::{BudgetCreditGranted, BudgetCreditReturned};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::models::ModelSpec;

/// A cached account is read again after this even without a change seen.
const ACCOUNT_TTL: Duration = Duration::from_secs(60);
/// More orgs than this cached: the cache starts over.
const MAX_CACHED_ACCOUNTS: usize = 10_000;

/// Credit unused this long on an idle replica goes back to its budget.
const IDLE_RETURN_AFTER_MS: i64 = 10_000;

use promptops_platform::db::unix_ms as now_ms;

/// One replica's credit for one hard budget and period.
#[derive(Debug)]
pub struct Credit {
    pub meter: Meter,
    aggregate: AggregateRef,
    budget: Budget,
    period_start_ms: i64,
    baseline: i64,
    last_used_ms: AtomicI64,
    /// One grant at a time per budget on this replica.
    granting: tokio::sync::Mutex<()>,
}

/// The reservations of one admitted run; settled when it ends, released
/// (nothing used) if it never started.
#[derive(Debug, Default)]
pub struct Hold {
    reserved: Vec<(Arc<Credit>, i64)>,
}

impl Hold {
    /// The run ended having used `tokens` (input + output) and `cost`.
    pub fn settle(mut self, tokens: u64, cost_nano_usd: i64) {
        for (credit, reserved) in std::mem::take(&mut self.reserved) {
            let actual = budget::units(credit.budget.metric(), tokens, cost_nano_usd);
            if actual > reserved {
                metrics::counter!("promptops_budget_excess_units_total", "budget" => credit.budget.id.clone())
                    .increment(u64::try_from(actual - reserved).unwrap_or(0));
            }
            credit.meter.settle(reserved, actual);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        for (credit, reserved) in self.reserved.drain(..) {
            credit.meter.settle(reserved, 0);
        }
    }
}

/// The org's accounts and this replica's budget credit.
#[derive(Debug)]
pub struct Accounts {
    log: EventLog,
    /// A plain map, not moka: a hit is a read lock and a clone of an `Arc`
    /// (moka's housekeeping on reads put 3-4 µs on 1 % of them).
    cache: RwLock<HashMap<String, (Arc<AccountState>, std::time::Instant)>>,
    /// Bumped by every invalidation: a load that raced one is not cached.
    invalidations: AtomicI64,
    replica_id: String,
    credits: RwLock<HashMap<String, Arc<Credit>>>,
}

fn store(err: impl std::fmt::Display) -> ServiceError {
    ServiceError::unavailable("the event log", err)
}

impl Accounts {
    pub fn new(log: EventLog) -> Self {
        Self {
            log,
            cache: RwLock::default(),
            invalidations: AtomicI64::new(0),
            replica_id: uuid::Uuid::now_v7().simple().to_string(),
            credits: RwLock::default(),
        }
    }

    /// The org's account (prices, projects, budgets), cached.
    pub async fn org(&self, org_id: &str) -> Result<Arc<AccountState>, ServiceError> {
        if let Some((hit, at)) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(org_id)
            && at.elapsed() < ACCOUNT_TTL
        {
            return Ok(hit.clone());
        }
        let generation = self.invalidations.load(Ordering::Acquire);
        let aggregate = AggregateRef::new(
            Context::Billing,
            org_id,
            account::AGGREGATE_TYPE,
            account::AGGREGATE_ID,
        )
        .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
        let state = Arc::new(load::<Account>(&self.log, &aggregate).await.map_err(store)?.state);
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if self.invalidations.load(Ordering::Acquire) != generation {
            // A change arrived while loading: this state may predate it.
            return Ok(state);
        }
        if cache.len() >= MAX_CACHED_ACCOUNTS {
            cache.clear();
        }
        cache.insert(org_id.to_owned(), (state.clone(), std::time::Instant::now()));
        Ok(state)
    }

    /// Drops an org's cached account whenever the billing stream changes it,
    /// from `after` (the stream's last sequence when the service started).
    pub async fn follow(self: Arc<Self>, after: u64, shutdown: CancellationToken) {
        let mut start = Start::After(after);
        while !shutdown.is_cancelled() {
            let mut tail = match self.log.tail_from(Context::Billing, start).await {
                Ok(tail) => tail,
                Err(e) => {
                    tracing::warn!(error = %e, "following billing accounts; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let delivery = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = tail.next() => next,
                };
                match delivery {
                    Ok(delivery) => {
                        let envelope = &delivery.event.envelope;
                        start = Start::After(delivery.event.sequence);
                        if envelope.aggregate_type == account::AGGREGATE_TYPE {
                            self.invalidations.fetch_add(1, Ordering::AcqRel);
                            self.cache
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&envelope.org_id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "following billing accounts; resubscribing");
                        // Whatever was missed meanwhile is read again.
                        self.invalidations.fetch_add(1, Ordering::AcqRel);
                        self.cache.write().unwrap_or_else(|e| e.into_inner()).clear();
                        break;
                    }
                }
            }
        }
    }

    /// `spec` at the price book's price now (the org's, else the seeded
    /// list price, else the catalog's own).
    pub fn priced(account: &AccountState, spec: Arc<ModelSpec>, at_ms: i64) -> Arc<ModelSpec> {
        match account.prices.at(&spec.id, at_ms) {
            Some(prices) if prices != spec.prices => Arc::new(ModelSpec {
                prices,
                ..(*spec).clone()
            }),
            _ => spec,
        }
    }

    /// Admits a run of `actor` against every hard budget that applies,
    /// reserving its worst case: `tokens` (the counted input and the most
    /// output it may write) and `worst_cost` (those at its prices). Local
    /// unless this replica's credit for a budget runs short, when it takes
    /// more.
    pub async fn admit(
        &self,
        org_id: &str,
        account: &AccountState,
        actor: &Actor,
        tokens: u64,
        worst_cost: i64,
    ) -> Result<Hold, ServiceError> {
        let mut hold = Hold::default();
        if account.budgets.is_empty() {
            return Ok(hold);
        }
        let api_key = (actor.kind() == ActorKind::ApiKey).then_some(actor.id.as_str());
        let payer = Payer {
            api_key,
            project: api_key.and_then(|key| account.project_of(key)),
        };
        let now = now_ms();
        for set in account.budgets.values() {
            let Some(budget) = set
                .budget
                .as_ref()
                .filter(|b| b.hard && budget::applies(b, payer))
            else {
                continue;
            };
            let need = budget::units(budget.metric(), tokens, worst_cost);
            let credit = self.credit(org_id, set, budget, now)?;
            credit.last_used_ms.store(now, Ordering::Relaxed);
            if !credit.meter.try_reserve(need) && !self.take_credit(&credit, need).await? {
                metrics::counter!("promptops_budget_refusals_total", "budget" => budget.id.clone())
                    .increment(1);
                return Err(refusal(budget, credit.period_start_ms, need));
            }
            hold.reserved.push((credit, need));
        }
        Ok(hold)
    }

    fn credit(
        &self,
        org_id: &str,
        set: &promptops_proto::billing::v1::BudgetSet,
        budget: &Budget,
        now: i64,
    ) -> Result<Arc<Credit>, ServiceError> {
        let period_start_ms = budget::period_start_ms(budget.period(), now);
        let id = credit::aggregate_id(&budget.id, period_start_ms);
        let key = format!("{org_id}/{id}");
        if let Some(hit) = self.credits.read().unwrap_or_else(|e| e.into_inner()).get(&key)
            && hit.budget == *budget
        {
            return Ok(hit.clone());
        }
        let aggregate = AggregateRef::new(Context::Execution, org_id, credit::AGGREGATE_TYPE, &id)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
        let fresh = Arc::new(Credit {
            meter: Meter::default(),
            aggregate,
            budget: budget.clone(),
            period_start_ms,
            baseline: if set.baseline_period_start_ms == period_start_ms {
                set.baseline_used
            } else {
                0
            },
            last_used_ms: AtomicI64::new(now),
            granting: tokio::sync::Mutex::new(()),
        });
        let mut credits = self.credits.write().unwrap_or_else(|e| e.into_inner());
        match credits.get(&key) {
            Some(existing) if existing.budget == *budget => return Ok(existing.clone()),
            Some(_) => {
                // The budget changed (e.g. a new limit): a new meter; the old
                // one's credit goes back with the idle sweep.
                if let Some(old) = credits.remove(&key) {
                    credits.insert(format!("{key}#replaced-{}", uuid::Uuid::now_v7().simple()), old);
                }
            }
            None => {}
        }
        credits.insert(key, fresh.clone());
        Ok(fresh)
    }

    /// Takes a chunk of credit for `credit` from its aggregate and reserves
    /// `need` from it. False when the budget has less than `need` left.
    async fn take_credit(&self, credit: &Credit, need: i64) -> Result<bool, ServiceError> {
        let _one_at_a_time = credit.granting.lock().await;
        // Another run may have taken credit meanwhile.
        if credit.meter.try_reserve(need) {
            return Ok(true);
        }
        let limit = credit.budget.limit;
        for _ in 0..3 {
            let command = CreditCommand::Grant {
                replica_id: self.replica_id.clone(),
                want: credit::chunk(limit, need),
                need,
                limit,
                baseline: credit.baseline,
            };
            let granted = match execute::<CreditAggregate>(
                &self.log,
                &credit.aggregate,
                command,
                &EventMetadata::default(),
            )
            .await
            {
                Ok(done) => done.events,
                Err(ExecuteError::Domain(_)) => return Ok(false),
                Err(e) => return Err(ServiceError::unavailable("the budget's credit", e)),
            };
            for event in granted {
                if let CreditEvent::Granted(g) = event {
                    metrics::counter!("promptops_budget_credit_granted_total", "budget" => credit.budget.id.clone())
                        .increment(1);
                    credit.meter.add(g.amount);
                }
            }
            if credit.meter.try_reserve(need) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Gives back the credit of budgets idle for a while (or, with
    /// `everything`, of all of them: at shutdown, once runs are drained).
    pub async fn return_credit(&self, everything: bool) {
        let now = now_ms();
        let credits: Vec<(String, Arc<Credit>)> = self
            .credits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        for (key, credit) in credits {
            let idle = credit.meter.in_flight() == 0
                && now - credit.last_used_ms.load(Ordering::Relaxed) >= IDLE_RETURN_AFTER_MS;
            if !(everything || idle) {
                continue;
            }
            let _one_at_a_time = credit.granting.lock().await;
            let amount = credit.meter.take_all();
            if amount != 0 {
                let command = CreditCommand::Return {
                    replica_id: self.replica_id.clone(),
                    amount,
                };
                if let Err(e) = execute::<CreditAggregate>(
                    &self.log,
                    &credit.aggregate,
                    command,
                    &EventMetadata::default(),
                )
                .await
                {
                    tracing::warn!(error = %e, budget = credit.budget.id, "returning budget credit; kept");
                    credit.meter.add(amount);
                    continue;
                }
            }
            // A past period's meter, idle and empty, is done with.
            let current = budget::period_start_ms(credit.budget.period(), now) == credit.period_start_ms;
            if (!current || key.contains("#replaced-")) && credit.meter.in_flight() == 0 {
                self.credits
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
        }
    }

    /// Returns idle credit every few seconds until shutdown.
    pub async fn run_returns(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(5)) => self.return_credit(false).await,
            }
        }
    }
}

fn usd(nano: i64) -> String {
    format!("{} USD", promptops_account::prices::usd_from_nano(nano))
}

/// The error a refused run gets: 402 for spend, 429 for a quota, naming
/// the budget, its limit and when it resets.
fn refusal(budget: &Budget, period_start_ms: i64, need: i64) -> ServiceError {
    let period = match budget.period() {
        BudgetPeriod::Month => "month",
        _ => "day",
    };
    let resets = budget::period_end_ms(budget.period(), period_start_ms);
    let resets = time::OffsetDateTime::from_unix_timestamp(resets / 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let (class, limit, needed) = match budget.metric() {
        BudgetMetric::Spend => (ErrorClass::BudgetExceeded, usd(budget.limit), usd(need)),
        BudgetMetric::Tokens => (
            ErrorClass::ResourceExhausted,
            format!("{} tokens", budget.limit),
            format!("{need} tokens"),
        ),
        _ => (
            ErrorClass::ResourceExhausted,
            format!("{} requests", budget.limit),
            "1 request".to_owned(),
        ),
    };
    ServiceError::budget(
        class,
        budget.id.clone(),
        format!(
            "budget {:?} ({}: {limit} per {period}, hard) has too little left for this run, which may use up to {needed}; it resets at {resets}",
            budget.id, budget.name
        ),
    )
}

#[derive(Debug, Clone)]
pub enum CreditCommand {
    Grant {
        replica_id: String,
        want: i64,
        need: i64,
        limit: i64,
        baseline: i64,
    },
    Return {
        replica_id: String,
        amount: i64,
    },
}

/// The credit aggregate, for the shared executor (optimistic concurrency).
#[derive(Debug)]
pub struct CreditAggregate;

impl Aggregate for CreditAggregate {
    type State = CreditState;
    type Event = CreditEvent;
    type Command = CreditCommand;
    type Error = Exhausted;
    const TYPE: &'static str = credit::AGGREGATE_TYPE;

    fn decide(state: &CreditState, command: CreditCommand) -> Result<Vec<CreditEvent>, Exhausted> {
        match command {
            CreditCommand::Grant {
                replica_id,
                want,
                need,
                limit,
                baseline,
            } => credit::decide_grant(*state, &replica_id, want, need, limit, baseline)
                .map(|g| vec![CreditEvent::Granted(g)]),
            CreditCommand::Return { amount: 0, .. } => Ok(Vec::new()),
            CreditCommand::Return { replica_id, amount } => {
                Ok(vec![CreditEvent::Returned(BudgetCreditReturned {
                    replica_id,
                    amount,
                })])
            }
        }
    }
    fn evolve(state: CreditState, event: &CreditEvent) -> CreditState {
        credit::evolve(state, event)
    }
    fn encode(event: &CreditEvent) -> EventDraft {
        match event {
            CreditEvent::Granted(e) => EventDraft::new(credit::GRANTED, e.encode_to_vec()),
            CreditEvent::Returned(e) => EventDraft::new(credit::RETURNED, e.encode_to_vec()),
        }
    }
    fn decode(envelope: &EventEnvelope) -> Option<CreditEvent> {
        let p = envelope.payload.as_slice();
        match envelope.event_type.as_str() {
            credit::GRANTED => BudgetCreditGranted::decode(p).ok().map(CreditEvent::Granted),
            credit::RETURNED => BudgetCreditReturned::decode(p).ok().map(CreditEvent::Returned),
            _ => None,
        }
    }
}
