//! An org's billing account, pure and shared by the billing service (which
//! decides) and the execution service (which prices runs and enforces hard
//! budgets on the hot path from the same events):
//!
//! - [`prices`]: the price book, seeded list prices and exact cost;
//! - [`budget`]: budgets and quotas, their periods and scopes;
//! - [`account`]: the `account` aggregate (prices, projects, budgets);
//! - [`credit`]: hard budgets across replicas, with the overshoot bound.

pub mod account;
pub mod budget;
pub mod credit;
pub mod prices;
