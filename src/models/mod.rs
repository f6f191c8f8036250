//! Models: the three predictions (will they return, when, which category) and the
//! buy-till-you-die (BTYD) model used as a baseline and as features.
//!
//! Each model follows linfa's shape: `XParams` (builder, documented defaults) → validated
//! params → `FittedX` (serde-serializable, carrying everything it needs to predict).

pub mod bgnbd;
