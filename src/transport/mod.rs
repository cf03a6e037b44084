//! Transports: how messages get in and out. Kafka (rdkafka) is the only one so far; Avro in
//! the Confluent wire format, with a Schema Registry, is the alternative to JSON payloads (the
//! schemas themselves are contracts: [`crate::contracts::avro`]). The transport also tracks
//! which offsets may be committed ([`offsets`]).

pub mod kafka;
pub mod offsets;
pub mod registry;
