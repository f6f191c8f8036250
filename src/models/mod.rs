//! Models: the three predictions (will they return, when, which category) and the
//! buy-till-you-die (BTYD) model used as a baseline and as features.
//!
//! Each model follows linfa's shape: `XParams` (builder, documented defaults) → validated
//! params → `FittedX` (serde-serializable, carrying everything it needs to predict).

pub mod bgnbd;
pub mod bundle;
pub mod calibration;
pub mod category;
pub mod evaluate;
pub mod gbt;
pub mod linear;
pub mod metrics;
pub mod registry;
pub mod return_classifier;
pub mod return_time;
pub mod rules;
pub mod training;
