//! Fixture tests: the exact text of the errors users see for common topology mistakes.
//!
//! Each `tests/fixtures/config/NAME.yaml` has a `NAME.errors` file with the expected lines.
//! Set `RAGSTREAM_BLESS=1` to rewrite the expected files after an intended change, then review
//! the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use ragstream::config::parse;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture directory exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The environment the fixtures see: only `BROKERS` is set.
fn lookup(name: &str) -> Option<String> {
    (name == "BROKERS").then(|| "127.0.0.1:9092".to_owned())
}

#[test]
fn every_fixture_reports_exactly_the_expected_errors() {
    let files = fixtures();
    assert!(files.len() >= 10, "at least 10 kinds of mistake are covered");
    let bless = std::env::var_os("RAGSTREAM_BLESS").is_some();
    let mut mismatches = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let errors = parse(&text, &lookup).expect_err(&format!("{} must be rejected", file.display()));
        let actual: String = errors.errors.iter().map(|e| format!("{e}\n")).collect();
        let expected_path = file.with_extension("errors");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            mismatches.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                file.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn shipped_topologies_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(errors) = parse(&text, &|_| None) {
            panic!("{}: {errors}", path.display());
        }
    }
}

#[test]
fn validate_command_names_the_file_and_exits_non_zero() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/03-max-in-flight-range.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_ragstream"))
        .args(["validate"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{}: 2 errors\n", fixture.display())),
        "{stderr}"
    );
    assert!(stderr.contains("  pipelines[1].stages[2].max_in_flight: must be between 1 and 10000, got 0\n"));

    let valid = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/default.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_ragstream"))
        .arg("validate")
        .arg(&valid)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
