//! What an operator touches: the TOML [`config`], the per-core [`counters`], the Prometheus
//! [`metrics`] endpoint and log settings, and the [`stages`] records for the propagation
//! report.

pub mod config;
pub mod counters;
pub mod metrics;
pub mod stages;
