//! Every integration test in one binary. Each test file used to be its own binary, and each of
//! those linked lancedb, datafusion and librdkafka again: one binary links once, which keeps a cold
//! CI build inside its budget, and `--test-threads` then spreads all tests over the cores at once.
//!
//! Run one area with a filter on its module, e.g. `cargo test --test integration answering::`.

mod common;

mod answering;
mod audit_table;
mod broker_restart;
mod chunking;
mod concurrent_writers;
mod config_errors;
mod config_reference;
mod cost_control;
mod embedding_equivalence;
mod engine;
mod faults;
mod hostile_input;
mod indexing;
mod ingest;
mod metrics;
mod model_faults;
mod object_storage;
mod pii_labeled;
mod schedules;
mod schema_registry;
mod schema_sync;
mod secrets;
mod serve;
mod state_store;
mod status;
mod tools;
mod traces;
