//! PII detection scored on two labeled sets with the default detector (the same code as
//! `ragstream pii evaluate FILE`):
//! - `tests/fixtures/pii/labeled.jsonl`: 420 texts written by the script that also builds the
//!   census name lists (not independent of the detector);
//! - `tests/fixtures/pii-independent/test.jsonl`: 1,000 support e-mails, chats, HR notes,
//!   invoices and IT tickets generated with Faker's locales (names, addresses and phone numbers
//!   from sources the detector does not use; see its README). Rules were read against its
//!   `dev` split only.
//!
//! - `tests/fixtures/pii-independent-v2/test.jsonl`: 1,000 texts from a second generator with
//!   templates of its own (48 name locales, 28 phone regions), written by someone else while the
//!   rules were worked on; the closer estimate of text nobody tuned for.
//!
//! - `tests/fixtures/pii-independent-v2/holdout.jsonl`: 1,000 more texts of the second generator,
//!   drawn after the last rules were written; only its totals are read.
//!
//! Run with `-- --nocapture` for the tables. The floors sit just below what was measured, so a
//! change that makes detection worse fails.

use ragstream::pii::evaluation::{evaluate, read_labeled, Report};
use ragstream::pii::Detector;

fn report(path: &str) -> Report {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let records = read_labeled(&text).unwrap();
    let report = evaluate(&Detector::default(), &records);
    println!("{path}\n{report}");
    report
}

/// `(kind, lowest F2)` on a set; every kind not listed must reach `others`.
fn check(report: &Report, floors: &[(&str, f64)], others: f64) -> Vec<String> {
    let mut failures = Vec::new();
    for (kind, tally) in &report.strict {
        let floor = floors.iter().find(|(k, _)| k == kind).map_or(others, |(_, f)| *f);
        if tally.f2() < floor {
            failures.push(format!(
                "{kind}: F2 {:.3} below {floor} (precision {:.3}, recall {:.3})",
                tally.f2(),
                tally.precision(),
                tally.recall()
            ));
        }
    }
    failures
}

#[test]
fn detection_on_the_generator_s_own_labeled_set() {
    let report = report("tests/fixtures/pii/labeled.jsonl");
    let failures = check(&report, &[("PERSON", 0.93), ("ADDRESS", 0.95), ("DOB", 0.93)], 0.98);
    assert!(failures.is_empty(), "{failures:#?}\n{:#?}", report.mistakes);
}

/// Floors for a whole set: F2 over all kinds, share of values left untouched, share of texts
/// without personal data that were changed.
struct Overall {
    f2: f64,
    untouched: f64,
    clean_changed: f64,
}

fn check_overall(report: &Report, floor: Overall) -> Vec<String> {
    let mut failures = Vec::new();
    let total = Report::total(&report.strict);
    if total.f2() < floor.f2 {
        failures.push(format!("all kinds: F2 {:.3} below {}", total.f2(), floor.f2));
    }
    if report.leaked_share() > floor.untouched {
        failures.push(format!(
            "{:.2}% of the values reached the masked text untouched",
            100.0 * report.leaked_share()
        ));
    }
    if report.clean_changed_share() > floor.clean_changed {
        failures.push(format!(
            "{:.1}% of the texts without personal data were changed",
            100.0 * report.clean_changed_share()
        ));
    }
    failures
}

/// Scores the set at `path` and fails on any kind below its floor (`floors`, else 0.98) or on
/// the whole set below `overall`.
fn assert_floors(path: &str, floors: &[(&str, f64)], overall: Overall) {
    let report = report(path);
    let mut failures = check(&report, floors, 0.98);
    failures.extend(check_overall(&report, overall));
    assert!(failures.is_empty(), "{path}: {failures:#?}");
}

#[test]
fn detection_on_the_independent_set() {
    // The targets: F2 ≥ 0.92, under 0.5% of the values untouched, at most 10% of the
    // clean texts changed (measured 2026-12-06: 0.995, 0.14%, 3.0%).
    assert_floors(
        "tests/fixtures/pii-independent/test.jsonl",
        &[("PERSON", 0.98), ("ADDRESS", 0.95), ("PHONE", 0.98)],
        Overall {
            f2: 0.98,
            untouched: 0.005,
            clean_changed: 0.10,
        },
    );
}

#[test]
fn detection_on_the_second_independent_set() {
    // The targets as above (measured 2026-12-06: F2 0.989, 0.22% untouched, 8.0% of the
    // clean texts changed; this split's missed values were read once, on 2026-12-06).
    assert_floors(
        "tests/fixtures/pii-independent-v2/test.jsonl",
        &[("PERSON", 0.96), ("ADDRESS", 0.97), ("PHONE", 0.98)],
        Overall {
            f2: 0.975,
            untouched: 0.005,
            clean_changed: 0.10,
        },
    );
}

#[test]
fn detection_on_the_second_sets_fresh_draw() {
    // Drawn after the rules of 2026-12-06 morning were written; only its totals are read. The
    // issue's targets. Measured 2026-12-06 evening: F2 0.987, 0.44% untouched, 8.0% of the clean
    // texts changed.
    assert_floors(
        "tests/fixtures/pii-independent-v2/holdout.jsonl",
        &[("PERSON", 0.96), ("ADDRESS", 0.96), ("PHONE", 0.98)],
        Overall {
            f2: 0.975,
            untouched: 0.005,
            clean_changed: 0.10,
        },
    );
}
