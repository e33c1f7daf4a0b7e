//! Serving: the five dashboard queries of SPEC section 7.
//!
//! [`queries`] defines them once (names, parameters, semantics); [`lake`] answers them from the
//! gold marts, the embedded default when no Cassandra is configured.

pub mod lake;
pub mod queries;

pub use queries::{QueryName, QueryParams};
