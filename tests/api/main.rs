//! The integration tests: one crate, one binary, one module per area, so
//! the harness in `support` compiles once (zero-to-production's `tests/api/`).
//! The metrics tests stay binaries of their own (`tests/metrics.rs`,
//! `tests/mode_metrics.rs`, `tests/auth_metrics.rs`): the Prometheus
//! recorder is process-global.

mod support;

mod algorithms;
mod api_embedded;
mod api_keys;
mod api_postgres;
mod audit_log;
mod authz;
mod caches;
mod chaos;
mod cli;
mod cluster;
mod docs_checks;
mod durable_sessions;
mod emergency;
mod external_idp;
mod failure_matrix;
mod failure_matrix_access;
mod fuzz_regressions;
mod harness;
mod keys;
mod ledger;
mod modes;
mod openapi;
mod operations;
mod operator;
mod pg_failover;
mod read_only;
mod redis_ha;
mod security_authority;
mod security_edge;
mod security_limits;
mod security_tokens;
mod slow_dependencies;
mod status_page;
mod store_conformance;
mod tls;
