//! Delivery: providers behind one trait, the retry schedule, and the dispatcher that drains the
//! outbox with leases.

pub mod dispatcher;
pub mod providers;
pub mod retry;
