//! Transports: how messages get in and out. Kafka (rdkafka) is the only one so far.

pub mod kafka;
