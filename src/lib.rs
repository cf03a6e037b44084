//! ragstream: an event-driven stream processor that brings LLMs into Kafka-based systems.
//!
//! The library holds everything the `ragstream` binary runs: the topology model and its validation
//! ([`config`]), the pipeline engine with at-least-once delivery ([`engine`]), the Kafka transport
//! ([`transport`]), the stage registry ([`stages`]), the message contracts ([`contracts`]) and
//! telemetry ([`telemetry`]).

pub mod analytics;
pub mod answering;
pub mod ask;
pub mod audit;
pub mod chunk;
pub mod clock;
pub mod config;
pub mod contracts;
pub mod core_api;
pub mod cost;
pub mod embed;
pub mod engine;
pub mod error;
pub mod ingest;
pub mod llm;
pub mod pseudonym;
pub use ragstream_pii as pii;
pub mod schedule;
pub mod secrets;
pub mod serve;
pub mod stages;
pub mod state;
pub mod status;
pub mod store;
pub mod tail;
pub mod telemetry;
pub mod tools;
pub mod transport;
