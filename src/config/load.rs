//! Reading a topology file into [`Topology`], collecting every error on the way.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::model::{PipelineConfig, RawPipeline, RawTopology, StageSpec, Topology, COMMON_STAGE_KEYS};
use super::{interpolate, validate, ConfigError, ConfigErrors};
use crate::error::Findings;
use crate::stages::StageConfig;

/// Reads, interpolates (from the process environment), parses and validates a topology file.
pub fn load_file(path: &Path) -> Result<Topology, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigErrors {
        source: source.clone(),
        errors: vec![ConfigError::new("file", format!("cannot read: {error}"))],
    })?;
    let lookup = |name: &str| std::env::var(name).ok();
    parse(&text, &lookup).map_err(|errors| ConfigErrors { source, ..errors })
}

/// Parses and validates topology text, looking `${VAR}` references up with `lookup`.
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Topology, ConfigErrors> {
    let mut errors = Vec::new();
    let text = interpolate(text, lookup, &mut errors);
    if !errors.is_empty() {
        // Parsing text with holes where variables were would only add confusing follow-on errors.
        return Err(ConfigErrors {
            source: "<inline>".into(),
            errors,
        });
    }
    let parts = match serde_yaml::from_str::<Value>(&text) {
        Ok(document) => build(document, &mut errors),
        Err(error) => {
            let path = error
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_else(|| "file".to_owned());
            errors.push(ConfigError::new(
                &path,
                format!("invalid YAML: {}", strip_location(&error)),
            ));
            return Err(ConfigErrors {
                source: "<inline>".into(),
                errors,
            });
        }
    };
    // Semantic checks run on every part that parsed, so they are reported alongside parse errors.
    validate::validate(parts.top.as_ref(), &parts.pipelines, &mut errors);
    match parts.into_topology() {
        Some(topology) if errors.is_empty() => Ok(topology),
        _ => Err(ConfigErrors {
            source: "<inline>".into(),
            errors,
        }),
    }
}

/// What parsed of a topology: the top level and each pipeline, each possibly missing.
pub(super) struct Parts {
    pub top: Option<RawTopology>,
    pub pipelines: Vec<Option<PipelineConfig>>,
}

impl Parts {
    fn into_topology(self) -> Option<Topology> {
        let top = self.top?;
        let pipelines = self.pipelines.into_iter().collect::<Option<Vec<_>>>()?;
        Some(Topology {
            version: top.version,
            kafka: top.kafka,
            telemetry: top.telemetry,
            shutdown: top.shutdown,
            topic_defaults: top.topic_defaults,
            schema_registry: top.schema_registry,
            pipelines,
            schedules: top.schedules,
            pseudonyms: top.pseudonyms,
        })
    }
}

/// serde_yaml appends " at line X column Y" to its messages; we print the location first instead.
fn strip_location(error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    match message.find(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message,
    }
}

fn build(document: Value, errors: &mut Vec<ConfigError>) -> Parts {
    if !document.is_mapping() {
        errors.push(ConfigError::new(
            "file",
            "a topology must be a YAML mapping with `version` and `pipelines`",
        ));
        return Parts {
            top: None,
            pipelines: Vec::new(),
        };
    }
    let raw_pipelines = document.get("pipelines").and_then(Value::as_sequence).cloned();
    let top: Option<RawTopology> = deserialize_at("", document, errors);
    // Pipelines are checked even when the top level failed, so their mistakes show up too.
    let pipelines = raw_pipelines
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, value)| build_pipeline(&format!("pipelines[{index}]"), value, errors))
        .collect();
    Parts { top, pipelines }
}

fn build_pipeline(path: &str, value: Value, errors: &mut Vec<ConfigError>) -> Option<PipelineConfig> {
    let raw_stages = value.get("stages").and_then(Value::as_sequence).cloned();
    let raw: Option<RawPipeline> = deserialize_at(path, value, errors);
    let stages: Vec<Option<StageSpec>> = raw_stages
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, value)| build_stage(&format!("{path}.stages[{index}]"), value, errors))
        .collect();
    let raw = raw?;
    let stages = stages.into_iter().collect::<Option<Vec<_>>>()?;
    Some(PipelineConfig {
        name: raw.name,
        source: raw.source,
        max_in_flight: raw.max_in_flight,
        max_message_bytes: raw.max_message_bytes,
        commit_interval_ms: raw.commit_interval_ms,
        retry: raw.retry,
        stages,
        sinks: raw.sinks,
        dead_letter: raw.dead_letter,
        audit_sink: raw.audit_sink,
        producer: raw.producer,
    })
}

fn build_stage(path: &str, value: Value, errors: &mut Vec<ConfigError>) -> Option<StageSpec> {
    let Value::Mapping(mut mapping) = value else {
        errors.push(ConfigError::new(path, "a stage must be a mapping with a `type` key"));
        return None;
    };
    let Some(kind) = mapping.get("type").and_then(Value::as_str).map(str::to_owned) else {
        errors.report(
            path,
            "type",
            format!("missing stage type (one of: {})", StageConfig::TYPES.join(", ")),
        );
        return None;
    };
    let mut common = serde_yaml::Mapping::new();
    for key in COMMON_STAGE_KEYS {
        if let Some(value) = mapping.remove(*key) {
            common.insert(Value::from(*key), value);
        }
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Common {
        name: Option<String>,
        max_in_flight: Option<u32>,
    }
    let common: Option<Common> = deserialize_at(path, Value::Mapping(common), errors);
    let config: Option<StageConfig> = deserialize_at(path, Value::Mapping(mapping), errors);
    let (common, config) = (common?, config?);
    Some(StageSpec {
        name: common.name.unwrap_or(kind),
        max_in_flight: common.max_in_flight,
        config,
    })
}

/// Deserializes `value`, recording the first error with the full path of the field it concerns.
fn deserialize_at<T: DeserializeOwned>(base: &str, value: Value, errors: &mut Vec<ConfigError>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            let inner = error.path().to_string();
            let path = match (base.is_empty(), inner.as_str()) {
                (true, ".") => "file".to_owned(),
                (true, _) => inner,
                (false, ".") => base.to_owned(),
                (false, _) if inner.starts_with('[') => format!("{base}{inner}"),
                (false, _) => format!("{base}.{inner}"),
            };
            let message = error.into_inner().to_string();
            // Name the unknown key in the path too, wherever serde's path stopped short of it.
            let path = match unknown_field(&message) {
                Some(field) if !path.ends_with(field) => format!("{path}.{field}"),
                _ => path,
            };
            errors.push(ConfigError::new(&path, message));
            None
        }
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}
