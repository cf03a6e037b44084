//! librdkafka properties: a flat map of strings, though YAML users naturally write numbers and
//! booleans (`linger.ms: 5`, `enable.idempotence: true`), so scalars of any type are accepted.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

use super::model::KafkaProperties;

/// Deserializes a map of scalar values into librdkafka's string properties.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<KafkaProperties, D::Error> {
    let raw = Option::<serde_yaml::Mapping>::deserialize(deserializer)?.unwrap_or_default();
    let mut properties = KafkaProperties::new();
    for (key, value) in raw {
        let Value::String(key) = key else {
            return Err(D::Error::custom("property names must be strings"));
        };
        let value = match value {
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(D::Error::custom(format!(
                    "property `{key}` must be a string, number or boolean"
                )))
            }
        };
        properties.insert(key, value);
    }
    Ok(properties)
}

/// Properties ragstream sets itself because delivery guarantees depend on them.
pub const MANAGED_CONSUMER_PROPERTIES: &[(&str, &str)] = &[
    ("group.id", "set it with `source.group`"),
    (
        "enable.auto.commit",
        "offsets are committed only after every output is acknowledged",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only after every output is acknowledged",
    ),
];

/// Producer properties ragstream sets itself.
pub const MANAGED_PRODUCER_PROPERTIES: &[(&str, &str)] = &[(
    "enable.idempotence",
    "the producer is always idempotent so retries cannot duplicate outputs",
)];
