//! The row a fault scenario adds to the chaos table (`scripts/chaos.sh`): when
//! `RAGSTREAM_CHAOS_REPORT` names a file, each scenario appends one JSON line to it once its
//! assertions have passed, so the table shows what the tests proved, never a failed run's counts.

use std::io::Write;

/// One scenario's counts.
#[derive(Debug, Default, serde::Serialize)]
pub struct ChaosRow {
    pub scenario: String,
    /// Messages produced to the pipelines' inputs.
    pub messages_in: usize,
    /// Records on the output topics (answers, audit events).
    pub outputs: usize,
    /// Inputs with neither an output nor a dead letter.
    pub lost: usize,
    /// Inputs with more than one outcome.
    pub duplicates: usize,
    pub dead_lettered: usize,
    /// Secrets or personal values found where they must not be (logs, metrics, outputs, dead letters),
    /// or rows of another tenant / version where they must not be.
    pub leaked: usize,
    /// What else the scenario checked, in a few words.
    pub note: String,
}

impl ChaosRow {
    /// Appends this row to the chaos report, if one is being written.
    pub fn report(&self) {
        let Ok(path) = std::env::var("RAGSTREAM_CHAOS_REPORT") else {
            return;
        };
        let line = serde_json::to_string(self).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|error| panic!("chaos report {path}: {error}"));
        writeln!(file, "{line}").unwrap();
    }
}
