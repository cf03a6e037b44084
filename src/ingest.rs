//! `ragstream ingest`: loads files from disk onto the documents topic.
//!
//! Each file becomes one `upsert` document. Its id is its path as given on the command line
//! (normalised, `/`-separated), so loading the same folder again addresses the same documents;
//! its version is the file's modification time in milliseconds, so an unchanged file is skipped
//! by the index and an edited one replaces its older chunks.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::config::KafkaProperties;
use crate::contracts::{Contract, Document, DocumentHeader, DocumentOp};
use crate::transport::kafka::create_producer;

/// Files sent to the broker at once; librdkafka batches them, this bounds memory.
const CONCURRENT_SENDS: usize = 64;

/// The kinds of file `ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Markdown,
    Text,
    Html,
}

impl FileKind {
    /// The kind a file name's extension says, if `ingest` reads such files.
    pub fn of(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "md" | "markdown" => Some(FileKind::Markdown),
            "txt" | "text" => Some(FileKind::Text),
            "html" | "htm" => Some(FileKind::Html),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            FileKind::Markdown => "text/markdown",
            FileKind::Text => "text/plain",
            FileKind::Html => "text/html",
        }
    }
}

/// A file that could not be ingested, and why.
#[derive(Debug)]
pub struct FileFailure {
    pub path: PathBuf,
    pub reason: FileError,
}

/// Why a file was not ingested; printed after its path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error("unsupported file type (ingest reads .md, .txt and .html)")]
    Unsupported,
    #[error("not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("cannot convert HTML to text: {0}")]
    Html(String),
    #[error("file has no text")]
    NoText,
    #[error("modification time is before 1970")]
    BeforeEpoch,
    /// The document the file makes breaks the documents contract (e.g. the tenant's pattern).
    #[error("{0}")]
    Contract(String),
    #[error("broker did not accept it: {0}")]
    Broker(rdkafka::error::KafkaError),
}

/// What to ingest and where to.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Files and folders (walked recursively; hidden entries skipped).
    pub paths: Vec<PathBuf>,
    /// Tenant owning the documents.
    pub tenant: String,
    /// Topic to produce to.
    pub topic: String,
    /// librdkafka properties (at least `bootstrap.servers`).
    pub kafka: KafkaProperties,
    /// Version for every document instead of the file's modification time.
    pub version: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// The outcome of an ingest run.
#[derive(Debug, Default)]
pub struct IngestReport {
    /// Documents acknowledged by the broker.
    pub ingested: usize,
    /// Bytes of text in them.
    pub bytes: u64,
    /// Files that failed, with the reason.
    pub failures: Vec<FileFailure>,
    /// Entries skipped in folders (unsupported extensions).
    pub skipped: usize,
    pub elapsed: Duration,
}

/// Walks `paths`: files named explicitly must be of a supported kind; in folders, files of
/// other kinds are skipped (and counted).
pub fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<FileFailure>, usize) {
    let mut files = Vec::new();
    let mut failures = Vec::new();
    let mut skipped = 0;
    for root in paths {
        let metadata = match std::fs::metadata(root) {
            Ok(metadata) => metadata,
            Err(error) => {
                failures.push(FileFailure {
                    path: root.clone(),
                    reason: FileError::Unreadable(error),
                });
                continue;
            }
        };
        if metadata.is_file() {
            if FileKind::of(root).is_some() {
                files.push(root.clone());
            } else {
                failures.push(FileFailure {
                    path: root.clone(),
                    reason: FileError::Unsupported,
                });
            }
            continue;
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| entry.depth() == 0 || !entry.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            match entry {
                Ok(entry) if entry.file_type().is_dir() => {}
                Ok(entry) if FileKind::of(entry.path()).is_some() => files.push(entry.into_path()),
                Ok(_) => skipped += 1,
                Err(error) => {
                    let path = error.path().map(Path::to_path_buf).unwrap_or_else(|| root.clone());
                    // A dangling link of a supported kind is a file the user expects to load.
                    if FileKind::of(&path).is_some() || error.io_error().is_none() {
                        failures.push(FileFailure {
                            path,
                            reason: FileError::Unreadable(error.into()),
                        });
                    } else {
                        skipped += 1;
                    }
                }
            }
        }
    }
    (files, failures, skipped)
}

/// The document id of `path`: its components joined by `/`, without `.` parts.
pub fn doc_id_of(path: &Path) -> String {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads `path` into a document for `tenant`.
pub fn read_document(path: &Path, tenant: &str, version: Option<u64>) -> Result<Document, FileError> {
    let kind = FileKind::of(path).ok_or(FileError::Unsupported)?;
    let raw = String::from_utf8(std::fs::read(path)?).map_err(|error| FileError::NotUtf8 {
        offset: error.utf8_error().valid_up_to(),
    })?;
    let (title, text) = match kind {
        FileKind::Html => (html_title(&raw), html_to_text(&raw)?),
        FileKind::Markdown => (markdown_title(&raw), raw),
        FileKind::Text => (None, raw),
    };
    if text.trim().is_empty() {
        return Err(FileError::NoText);
    }
    let version = match version {
        Some(version) => version,
        None => modified_millis(path)?,
    };
    let title = title.or_else(|| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()));
    let source = path.display().to_string();
    let document = Document {
        header: DocumentHeader {
            title,
            source: Some(source),
            metadata: BTreeMap::from([("content_type".to_owned(), kind.content_type().to_owned())]),
            ..DocumentHeader::new(tenant, doc_id_of(path), DocumentOp::Upsert, version)
        },
        text: Some(text),
    };
    let value = serde_json::to_value(&document).map_err(|error| FileError::Contract(error.to_string()))?;
    Contract::documents().validate(&value).map_err(FileError::Contract)?;
    Ok(document)
}

fn modified_millis(path: &Path) -> Result<u64, FileError> {
    let modified = std::fs::metadata(path)?.modified()?;
    let since_epoch = modified
        .duration_since(UNIX_EPOCH)
        .map_err(|_| FileError::BeforeEpoch)?;
    Ok(since_epoch.as_millis() as u64)
}

fn markdown_title(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("# "))
        .map(|title| title.trim().to_owned())
        .filter(|title| !title.is_empty())
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = html[start..end].trim();
    (!title.is_empty()).then(|| title.to_owned())
}

fn html_to_text(html: &str) -> Result<String, FileError> {
    // Wide lines: the chunker re-flows text by sentences, wrapping would only add breaks.
    html2text::from_read(html.as_bytes(), 10_000).map_err(|error| FileError::Html(error.to_string()))
}

/// Reads every file of `options.paths` and produces it; returns what happened to each.
pub async fn ingest(options: &IngestOptions) -> anyhow::Result<IngestReport> {
    let started = Instant::now();
    let producer = create_producer(&options.kafka, &KafkaProperties::new())?;
    let (files, mut failures, skipped) = collect_files(&options.paths);
    let bar = if options.progress {
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  eta {eta}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let failed = AtomicUsize::new(failures.len());
    let outcomes: Vec<(PathBuf, Result<u64, FileError>)> = stream::iter(files)
        .map(|path| {
            let (producer, bar, failed) = (&producer, &bar, &failed);
            async move {
                let outcome = send_file(producer, &path, options).await;
                bar.inc(1);
                if outcome.is_err() {
                    let failed = failed.fetch_add(1, Ordering::Relaxed) + 1;
                    bar.set_message(format!("{failed} failed"));
                }
                (path, outcome)
            }
        })
        .buffer_unordered(CONCURRENT_SENDS)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut report = IngestReport {
        skipped,
        ..IngestReport::default()
    };
    for (path, outcome) in outcomes {
        match outcome {
            Ok(bytes) => {
                report.ingested += 1;
                report.bytes += bytes;
            }
            Err(reason) => failures.push(FileFailure { path, reason }),
        }
    }
    failures.sort_by(|a, b| a.path.cmp(&b.path));
    report.failures = failures;
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn send_file(producer: &FutureProducer, path: &Path, options: &IngestOptions) -> Result<u64, FileError> {
    let document = read_document(path, &options.tenant, options.version)?;
    let bytes = document.text.as_ref().map_or(0, |text| text.len() as u64);
    let payload = serde_json::to_vec(&document).map_err(|error| FileError::Contract(error.to_string()))?;
    let record = FutureRecord::to(&options.topic)
        .key(document.header.doc_id.as_bytes())
        .payload(&payload);
    producer
        .send(record, Timeout::After(Duration::from_secs(60)))
        .await
        .map_err(|(error, _)| FileError::Broker(error))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_normalised_paths() {
        assert_eq!(doc_id_of(Path::new("./corpus/acme/leave.md")), "corpus/acme/leave.md");
        assert_eq!(doc_id_of(Path::new("corpus//acme/./leave.md")), "corpus/acme/leave.md");
    }

    #[test]
    fn reads_markdown_html_and_text_and_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.md"), "# Leave policy\n\nEmployees get 25 days.").unwrap();
        std::fs::write(
            root.join("b.html"),
            "<html><head><title>Rates</title></head><body><h1>Rates</h1><p>Parcels cost <b>4 EUR</b>.</p></body></html>",
        )
        .unwrap();
        std::fs::write(root.join("c.txt"), "plain words").unwrap();
        std::fs::write(root.join("d.txt"), b"\xff\xfe binary").unwrap();
        std::fs::write(root.join("e.png"), b"not read").unwrap();
        std::fs::create_dir(root.join(".hidden")).unwrap();
        std::fs::write(root.join(".hidden/x.md"), "ignored").unwrap();
        std::os::unix::fs::symlink(root.join("missing.md"), root.join("f.md")).unwrap();

        let (files, failures, skipped) = collect_files(&[root.to_path_buf()]);
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.md", "b.html", "c.txt", "d.txt"]);
        assert_eq!(skipped, 1, "the png");
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].path.ends_with("f.md"));

        let markdown = read_document(&root.join("a.md"), "acme", Some(3)).unwrap();
        assert_eq!(markdown.header.title.as_deref(), Some("Leave policy"));
        assert_eq!(markdown.header.version, 3);
        let html = read_document(&root.join("b.html"), "acme", None).unwrap();
        assert_eq!(html.header.title.as_deref(), Some("Rates"));
        let text = html.text.unwrap();
        assert!(
            text.contains("Parcels cost") && text.contains("4 EUR") && !text.contains("<p>"),
            "{text}"
        );
        assert!(html.header.version > 1_600_000_000_000, "mtime in ms");
        let error = read_document(&root.join("d.txt"), "acme", None).unwrap_err();
        assert!(matches!(error, FileError::NotUtf8 { offset: 0 }), "{error:?}");
        assert_eq!(error.to_string(), "not UTF-8 text (invalid byte at offset 0)");
        let error = read_document(&root.join("c.txt"), "not a tenant!", None).unwrap_err();
        assert!(
            matches!(&error, FileError::Contract(why) if why.contains("/tenant")),
            "{error:?}"
        );
    }
}
