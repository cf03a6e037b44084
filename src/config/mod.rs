//! Topology files: model, loading and validation.
//!
//! The same code path serves `ragstream validate` and start-up, so what `validate` accepts is
//! exactly what `run` accepts. Loading never stops at the first mistake: each pipeline and each
//! stage is deserialized on its own and the semantic checks run on whatever parsed, so a user
//! fixes every problem in one round trip.

mod interpolate;
pub mod kafka_props;
mod load;
mod model;
mod validate;

use std::fmt;

pub use interpolate::interpolate;
pub use load::{load_file, parse};
pub use model::*;

pub use crate::error::ConfigError;

/// Every problem found in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file the errors are about (or `<inline>` for text parsed directly).
    pub source: String,
    /// The errors in the order they were found.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        let noun = if count == 1 { "error" } else { "errors" };
        writeln!(f, "{}: {count} {noun}", self.source)?;
        for error in &self.errors {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
