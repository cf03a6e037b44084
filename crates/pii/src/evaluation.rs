//! Scores a detector on a labeled set: precision, recall and F2 per kind, how many values would
//! reach the model unmasked, and how many texts without personal data would be changed. Used
//! by `ragstream pii evaluate`, the labeled-set tests and the benchmark, so every figure is
//! computed one way.
//!
//! A labeled set is JSON lines: `{"text": "…", "entities": [{"type": "PERSON", "value": "…",
//! "start": 3, "end": 8}]}`. `start`/`end` are Unicode code point offsets (as Python's string
//! indices); without them an entity's span is the first occurrence of its value not already
//! taken by an earlier entity.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Deserialize;

use super::{Detector, PiiKind};

/// One labeled text.
#[derive(Debug, Clone, Deserialize)]
pub struct LabeledText {
    #[serde(default)]
    pub id: serde_json::Value,
    pub text: String,
    #[serde(default)]
    pub entities: Vec<LabeledEntity>,
}

/// One labeled value in a text.
#[derive(Debug, Clone, Deserialize)]
pub struct LabeledEntity {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    #[serde(default)]
    pub start: Option<usize>,
    #[serde(default)]
    pub end: Option<usize>,
}

/// Reads a labeled set; errors name the line.
pub fn read_labeled(jsonl: &str) -> Result<Vec<LabeledText>, String> {
    jsonl
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| serde_json::from_str(line).map_err(|error| format!("line {}: {error}", number + 1)))
        .collect()
}

/// Counts for one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub true_positives: u32,
    pub false_positives: u32,
    pub false_negatives: u32,
    /// Labeled values no detection touched at all: they reach the masked text whole.
    pub untouched: u32,
}

impl Tally {
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_positives)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_negatives)
    }

    /// F-beta with beta 2: recall weighs four times as much as precision (a missed value is
    /// worse than an extra placeholder).
    pub fn f2(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            5.0 * p * r / (4.0 * p + r)
        }
    }

    fn add(&mut self, other: &Tally) {
        self.true_positives += other.true_positives;
        self.false_positives += other.false_positives;
        self.false_negatives += other.false_negatives;
        self.untouched += other.untouched;
    }
}

fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        1.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// What a detector did on a labeled set.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Exact span and kind: a detection counts when it covers exactly the labeled value.
    pub strict: BTreeMap<String, Tally>,
    /// Overlap and kind: a detection counts when it overlaps a labeled value of its kind.
    pub lenient: BTreeMap<String, Tally>,
    pub texts: u32,
    pub texts_without_pii: u32,
    /// Texts without personal data in which something was detected.
    pub clean_texts_changed: u32,
    pub labeled_values: u32,
    /// Every mistake, for reading: `#id missed PERSON `Priya``.
    pub mistakes: Vec<String>,
}

impl Report {
    pub fn total(tallies: &BTreeMap<String, Tally>) -> Tally {
        let mut total = Tally::default();
        for tally in tallies.values() {
            total.add(tally);
        }
        total
    }

    /// Share of labeled values that no detection touched.
    pub fn leaked_share(&self) -> f64 {
        f64::from(Self::total(&self.strict).untouched) / f64::from(self.labeled_values.max(1))
    }

    /// Share of texts without personal data that were changed.
    pub fn clean_changed_share(&self) -> f64 {
        f64::from(self.clean_texts_changed) / f64::from(self.texts_without_pii.max(1))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:16} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}",
            "kind", "values", "P", "R", "F2", "P~", "R~", "F2~", "fp", "untouched"
        )?;
        let mut rows: Vec<(String, Tally, Tally)> = self
            .strict
            .iter()
            .map(|(kind, strict)| {
                (
                    kind.clone(),
                    *strict,
                    self.lenient.get(kind).copied().unwrap_or_default(),
                )
            })
            .collect();
        rows.push(("all".into(), Report::total(&self.strict), Report::total(&self.lenient)));
        for (kind, strict, lenient) in rows {
            writeln!(
                f,
                "{kind:16} {:>6} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6} {:>8}",
                strict.true_positives + strict.false_negatives,
                strict.precision(),
                strict.recall(),
                strict.f2(),
                lenient.precision(),
                lenient.recall(),
                lenient.f2(),
                strict.false_positives,
                strict.untouched
            )?;
        }
        let mut summary = String::new();
        let _ = write!(
            summary,
            "texts {}, values {}, values untouched {:.2}%, texts without personal data changed {} of {} ({:.1}%)",
            self.texts,
            self.labeled_values,
            100.0 * self.leaked_share(),
            self.clean_texts_changed,
            self.texts_without_pii,
            100.0 * self.clean_changed_share()
        );
        writeln!(f, "{summary}")?;
        writeln!(f, "(P R F2: exact span and kind; P~ R~ F2~: overlapping span and kind)")
    }
}

/// Detects over `records` again and again for at least `at_least` on this thread: the
/// characters scanned and the seconds it took.
pub fn throughput(detector: &Detector, records: &[LabeledText], at_least: std::time::Duration) -> (usize, f64) {
    let per_pass: usize = records.iter().map(|record| record.text.chars().count()).sum();
    let started = std::time::Instant::now();
    let mut characters = 0;
    while started.elapsed() < at_least && per_pass > 0 {
        for record in records {
            std::hint::black_box(detector.detect(&record.text));
        }
        characters += per_pass;
    }
    (characters, started.elapsed().as_secs_f64())
}

/// Byte ranges of the labeled entities of `record`.
fn labeled_spans(record: &LabeledText) -> Vec<(usize, usize)> {
    let byte_at = |char_index: usize| {
        record
            .text
            .char_indices()
            .nth(char_index)
            .map_or(record.text.len(), |(byte, _)| byte)
    };
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for entity in &record.entities {
        let span = match (entity.start, entity.end) {
            (Some(start), Some(end)) => (byte_at(start), byte_at(end)),
            _ => {
                let mut from = 0;
                let mut span = (0, 0);
                while let Some(found) = record.text[from..].find(&entity.value) {
                    let start = from + found;
                    let candidate = (start, start + entity.value.len());
                    if !taken.contains(&candidate) {
                        span = candidate;
                        break;
                    }
                    from = start + 1;
                    while !record.text.is_char_boundary(from) {
                        from += 1;
                    }
                }
                span
            }
        };
        taken.push(span);
    }
    taken
}

/// Scores `detector` on `records`.
pub fn evaluate(detector: &Detector, records: &[LabeledText]) -> Report {
    let mut report = Report::default();
    for kind in PiiKind::ALL {
        report.strict.insert(kind.label().to_owned(), Tally::default());
        report.lenient.insert(kind.label().to_owned(), Tally::default());
    }
    for record in records {
        report.texts += 1;
        let found = detector.detect(&record.text);
        if record.entities.is_empty() {
            report.texts_without_pii += 1;
            if !found.is_empty() {
                report.clean_texts_changed += 1;
            }
        }
        let labeled = labeled_spans(record);
        report.labeled_values += labeled.len() as u32;
        let mut strict_used = vec![false; found.len()];
        let mut lenient_used = vec![false; found.len()];
        for (entity, &(start, end)) in record.entities.iter().zip(&labeled) {
            let kind = entity.kind.as_str();
            let overlapping = |span: &super::Span| span.start < end && start < span.end;
            let touched = found.iter().any(overlapping);
            let strict = found
                .iter()
                .position(|s| s.kind.label() == kind && (s.start, s.end) == (start, end));
            let lenient = found
                .iter()
                .enumerate()
                .position(|(i, s)| s.kind.label() == kind && overlapping(s) && !lenient_used[i]);
            let tally = report.strict.entry(kind.to_owned()).or_default();
            if !touched {
                tally.untouched += 1;
            }
            match strict {
                Some(i) => {
                    strict_used[i] = true;
                    tally.true_positives += 1;
                }
                None => {
                    tally.false_negatives += 1;
                    let got: Vec<String> = found
                        .iter()
                        .filter(|s| overlapping(s))
                        .map(|s| format!("{} `{}`", s.kind.label(), &record.text[s.start..s.end]))
                        .collect();
                    report.mistakes.push(format!(
                        "#{} missed {kind} `{}`{}",
                        record.id,
                        entity.value,
                        if got.is_empty() {
                            String::new()
                        } else {
                            format!(" (found {})", got.join(", "))
                        }
                    ));
                }
            }
            let tally = report.lenient.entry(kind.to_owned()).or_default();
            match lenient {
                Some(i) => {
                    lenient_used[i] = true;
                    tally.true_positives += 1;
                }
                None => tally.false_negatives += 1,
            }
        }
        for (i, span) in found.iter().enumerate() {
            let label = span.kind.label().to_owned();
            if !strict_used[i] {
                report.strict.entry(label.clone()).or_default().false_positives += 1;
                let labeled_here = labeled.iter().any(|&(s, e)| span.start < e && s < span.end);
                if !labeled_here {
                    report.mistakes.push(format!(
                        "#{} wrongly found {label} `{}`",
                        record.id,
                        &record.text[span.start..span.end]
                    ));
                }
            }
            if !lenient_used[i] {
                report.lenient.entry(label).or_default().false_positives += 1;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_exact_and_overlapping_spans_and_counts_untouched_values() {
        let records = read_labeled(concat!(
            r#"{"id": 1, "text": "Mail jane@example.com or call Dr. Øster Berg.", "entities": [{"type": "EMAIL", "value": "jane@example.com"}, {"type": "PERSON", "value": "Øster Berg", "start": 34, "end": 44}]}"#,
            "\n",
            r#"{"id": 2, "text": "Nothing personal here.", "entities": []}"#,
            "\n",
            r#"{"id": 3, "text": "key sk-123 for zed", "entities": [{"type": "PERSON", "value": "zed"}]}"#,
        ))
        .unwrap();
        let report = evaluate(&Detector::default(), &records);
        assert_eq!(report.strict["EMAIL"].true_positives, 1);
        assert_eq!(report.labeled_values, 3);
        assert_eq!(report.strict["PERSON"].untouched, 1, "{report}");
        assert_eq!((report.texts_without_pii, report.clean_texts_changed), (1, 0));
        assert!(report.to_string().contains("values untouched 33.33%"));
    }
}
