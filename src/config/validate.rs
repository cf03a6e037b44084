//! Semantic checks that serde cannot express: ranges, names, references between fields.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::kafka_props::{MANAGED_CONSUMER_PROPERTIES, MANAGED_PRODUCER_PROPERTIES};
use super::model::{KafkaProperties, PipelineConfig, RawTopology, SchemaRegistryConfig, SinkFormat};
use super::ConfigError;
use crate::error::Findings;

/// The only topology format this build understands.
pub const SUPPORTED_VERSION: u32 = 1;

/// Inclusive bounds of every `max_in_flight` setting.
pub const MAX_IN_FLIGHT_RANGE: (u32, u32) = (1, 10_000);

/// Appends every semantic problem of the parts that parsed to `errors`.
pub(super) fn validate(top: Option<&RawTopology>, pipelines: &[Option<PipelineConfig>], errors: &mut Vec<ConfigError>) {
    let empty = KafkaProperties::new();
    let shared = top.map_or(&empty, |top| &top.kafka);
    if let Some(top) = top {
        validate_top_level(top, errors);
    }
    let earlier = earlier_uses(
        pipelines
            .iter()
            .map(|pipeline| pipeline.as_ref().map(|p| p.name.as_str())),
    );
    for (index, pipeline) in pipelines.iter().enumerate() {
        let Some(pipeline) = pipeline else { continue };
        let path = format!("pipelines[{index}]");
        if let Some(first) = earlier[index] {
            errors.report(
                &path,
                "name",
                format!(
                    "duplicate pipeline name `{}` (also used by pipelines[{first}])",
                    pipeline.name
                ),
            );
        }
        let registry = top.map(|top| top.schema_registry.is_some());
        validate_pipeline(&path, pipeline, shared, top.is_some(), errors);
        validate_sink_formats(&path, pipeline, registry, errors);
    }
}

fn validate_top_level(top: &RawTopology, errors: &mut Vec<ConfigError>) {
    if top.version != SUPPORTED_VERSION {
        errors.push(ConfigError::new(
            "version",
            format!(
                "unsupported version {}, this build reads version {SUPPORTED_VERSION}",
                top.version
            ),
        ));
    }
    if let Err(error) = top.telemetry.listen.parse::<SocketAddr>() {
        errors.push(ConfigError::new(
            "telemetry.listen",
            format!(
                "`{}` is not a socket address such as 127.0.0.1:9898 ({error})",
                top.telemetry.listen
            ),
        ));
    }
    if let Some(traces) = &top.telemetry.traces {
        traces.validate("telemetry.traces", errors);
    }
    if top.shutdown.drain_timeout_ms == 0 {
        errors.push(ConfigError::new("shutdown.drain_timeout_ms", "must be greater than 0"));
    }
    if top.topic_defaults.partitions < 1 {
        errors.push(ConfigError::new(
            "topic_defaults.partitions",
            format!("must be at least 1, got {}", top.topic_defaults.partitions),
        ));
    }
    if top.topic_defaults.replication_factor < 1 {
        errors.push(ConfigError::new(
            "topic_defaults.replication_factor",
            format!("must be at least 1, got {}", top.topic_defaults.replication_factor),
        ));
    }
    if let Some(registry) = &top.schema_registry {
        validate_schema_registry(registry, errors);
    }
    if let Some(schedules) = &top.schedules {
        schedules.validate("schedules", errors);
    }
    top.pseudonyms.validate("pseudonyms", errors);
    check_managed_keys("kafka", &top.kafka, MANAGED_CONSUMER_PROPERTIES, errors);
    check_managed_keys("kafka", &top.kafka, MANAGED_PRODUCER_PROPERTIES, errors);
    if top.pipelines.is_empty() {
        errors.push(ConfigError::new("pipelines", "at least one pipeline is required"));
    }
}

fn validate_schema_registry(registry: &SchemaRegistryConfig, errors: &mut Vec<ConfigError>) {
    match reqwest::Url::parse(&registry.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        Ok(url) => errors.push(ConfigError::new(
            "schema_registry.url",
            format!("scheme `{}` is not http or https", url.scheme()),
        )),
        Err(error) => errors.push(ConfigError::new(
            "schema_registry.url",
            format!(
                "`{}` is not a URL such as http://127.0.0.1:8081 ({error})",
                registry.url
            ),
        )),
    }
    if registry.timeout_ms == 0 {
        errors.push(ConfigError::new("schema_registry.timeout_ms", "must be greater than 0"));
    }
    if registry.password.is_some() && registry.username.is_none() {
        errors.push(ConfigError::new(
            "schema_registry.password",
            "a password needs a `username`",
        ));
    }
}

/// Avro sinks need a registry and one of ragstream's schemas. `registry` is whether the
/// top level configures one (`None` when the top level did not parse: nothing to compare with).
fn validate_sink_formats(path: &str, pipeline: &PipelineConfig, registry: Option<bool>, errors: &mut Vec<ConfigError>) {
    for (index, sink) in pipeline.sinks.iter().enumerate() {
        let sink_path = format!("{path}.sinks[{index}]");
        match (sink.format, &sink.schema) {
            (SinkFormat::Json, None) => {}
            (SinkFormat::Json, Some(_)) => errors.report(&sink_path, "schema", "only used with `format: avro`"),
            (SinkFormat::Avro, schema) => {
                if registry == Some(false) {
                    errors.report(
                        &sink_path,
                        "format",
                        "`avro` needs the top-level `schema_registry` (with its `url`)",
                    );
                }
                let known = crate::contracts::avro::schema_names().join(", ");
                match schema {
                    None => errors.report(
                        &sink_path,
                        "schema",
                        format!("`format: avro` needs the records' schema, one of: {known}"),
                    ),
                    Some(name) if crate::contracts::avro::message_schema(name).is_none() => errors.report(
                        &sink_path,
                        "schema",
                        format!("unknown schema `{name}`, expected one of: {known}"),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
}

fn validate_pipeline(
    path: &str,
    pipeline: &PipelineConfig,
    shared: &KafkaProperties,
    shared_parsed: bool,
    errors: &mut Vec<ConfigError>,
) {
    errors.require_name(path, "name", &pipeline.name);
    check_topic(&format!("{path}.source.topic"), &pipeline.source.topic, errors);
    if pipeline.source.group.trim().is_empty() {
        errors.report(path, "source.group", "must not be empty");
    }
    check_managed_keys(
        &format!("{path}.source.kafka"),
        &pipeline.source.kafka,
        MANAGED_CONSUMER_PROPERTIES,
        errors,
    );
    check_managed_keys(
        &format!("{path}.producer"),
        &pipeline.producer,
        MANAGED_PRODUCER_PROPERTIES,
        errors,
    );
    let has_bootstrap = |props: &KafkaProperties| props.contains_key("bootstrap.servers");
    if shared_parsed
        && !has_bootstrap(shared)
        && !(has_bootstrap(&pipeline.source.kafka) && has_bootstrap(&pipeline.producer))
    {
        errors.report(
            path,
            "source.kafka",
            "`bootstrap.servers` is not set (set it in the top-level `kafka` map)",
        );
    }
    check_in_flight(&format!("{path}.max_in_flight"), pipeline.max_in_flight, errors);
    if pipeline.max_message_bytes == 0 {
        errors.report(path, "max_message_bytes", "must be greater than 0");
    }
    errors.require_within(path, "commit_interval_ms", pipeline.commit_interval_ms, 10..=60_000);
    let retry = &pipeline.retry;
    if retry.max_attempts == 0 {
        errors.report(path, "retry.max_attempts", "must be at least 1, got 0");
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        errors.report(
            path,
            "retry.initial_backoff_ms",
            format!(
                "must not exceed retry.max_backoff_ms ({} > {})",
                retry.initial_backoff_ms, retry.max_backoff_ms
            ),
        );
    }
    for (index, stage) in pipeline.stages.iter().enumerate() {
        let stage_path = format!("{path}.stages[{index}]");
        if let Some(limit) = stage.max_in_flight {
            check_in_flight(&format!("{stage_path}.max_in_flight"), limit, errors);
        }
        stage.config.validate(&stage_path, errors);
    }
    let ends_in_storage = pipeline.stages.last().is_some_and(|stage| stage.config.is_terminal());
    if pipeline.sinks.is_empty() && !ends_in_storage {
        errors.report(path, "sinks", "at least one sink is required");
    }
    let sink_names: HashSet<&str> = pipeline.sinks.iter().map(|sink| sink.name.as_str()).collect();
    let earlier = earlier_uses(pipeline.sinks.iter().map(|sink| Some(sink.name.as_str())));
    for (index, sink) in pipeline.sinks.iter().enumerate() {
        let sink_path = format!("{path}.sinks[{index}]");
        if let Some(first) = earlier[index] {
            errors.report(
                &sink_path,
                "name",
                format!("duplicate sink name `{}` (also used by sinks[{first}])", sink.name),
            );
        }
        errors.require_name(&sink_path, "name", &sink.name);
        check_topic(&format!("{sink_path}.topic"), &sink.topic, errors);
        if sink.topic == pipeline.source.topic {
            errors.report(
                sink_path,
                "topic",
                format!(
                    "`{}` is also the source topic; the pipeline would consume its own output",
                    sink.topic
                ),
            );
        }
    }
    for (index, stage) in pipeline.stages.iter().enumerate() {
        let stage_path = format!("{path}.stages[{index}]");
        for (field, sink) in stage.config.sinks() {
            if !sink_names.contains(sink) {
                errors.push(ConfigError::new(
                    &format!("{stage_path}.{field}"),
                    format!("`{sink}` is not one of this pipeline's sinks"),
                ));
            }
        }
        if let Some(needed) = stage.config.needs_earlier() {
            if !pipeline.stages[..index].iter().any(|s| s.config.type_name() == needed) {
                errors.report(
                    stage_path,
                    "type",
                    format!(
                        "`{}` needs a `{needed}` stage earlier in the same pipeline",
                        stage.config.type_name()
                    ),
                );
            }
        }
    }
    if let Some(audit_sink) = &pipeline.audit_sink {
        if !sink_names.contains(audit_sink.as_str()) {
            errors.report(
                path,
                "audit_sink",
                format!("`{audit_sink}` is not one of this pipeline's sinks"),
            );
        }
    }
    let dead_letter = &pipeline.dead_letter.topic;
    check_topic(&format!("{path}.dead_letter.topic"), dead_letter, errors);
    if *dead_letter == pipeline.source.topic {
        errors.report(
            path,
            "dead_letter.topic",
            format!("`{dead_letter}` is also the source topic; dead letters would be consumed again"),
        );
    }
}

fn check_in_flight(path: &str, value: u32, errors: &mut Vec<ConfigError>) {
    let (low, high) = MAX_IN_FLIGHT_RANGE;
    if !(low..=high).contains(&value) {
        errors.push(ConfigError::new(
            path,
            format!("must be between {low} and {high}, got {value}"),
        ));
    }
}

fn check_managed_keys(path: &str, props: &KafkaProperties, managed: &[(&str, &str)], errors: &mut Vec<ConfigError>) {
    for (key, why) in managed {
        if props.contains_key(*key) {
            errors.push(ConfigError::new(
                &format!("{path}.{key}"),
                format!("is managed by ragstream ({why}); remove it"),
            ));
        }
    }
}

/// For each name (`None`: an entry that could not be read), the index of the first earlier
/// entry with the same name.
fn earlier_uses<'a>(names: impl Iterator<Item = Option<&'a str>>) -> Vec<Option<usize>> {
    let mut first_use: HashMap<&str, usize> = HashMap::new();
    names
        .enumerate()
        .map(|(index, name)| {
            name.and_then(|name| {
                first_use.get(name).copied().or_else(|| {
                    first_use.insert(name, index);
                    None
                })
            })
        })
        .collect()
}

/// Kafka's own rules for topic names.
fn check_topic(path: &str, topic: &str, errors: &mut Vec<ConfigError>) {
    let message = if topic.is_empty() {
        Some("must not be empty".to_owned())
    } else if topic == "." || topic == ".." {
        Some(format!("`{topic}` is not a valid topic name"))
    } else if topic.len() > 249 {
        Some(format!("topic names are at most 249 characters, got {}", topic.len()))
    } else if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some(format!(
            "`{topic}` is not a valid topic name: use only ASCII letters, digits, '.', '_' and '-'"
        ))
    } else {
        None
    };
    if let Some(message) = message {
        errors.push(ConfigError::new(path, message));
    }
}
