//! Transports: how messages get in and out. Kafka (rdkafka) is the only one so far; Avro in
//! the Confluent wire format, with a Schema Registry, is the alternative to JSON payloads.

pub mod avro;
pub mod kafka;
pub mod registry;
