//! Where a table's files live: a local directory or an object store (`s3://bucket/prefix`, with
//! the same `storage_options` as the index), behind one interface.
//!
//! A file appears whole or not at all: an object store's PUT is atomic, and a local write goes
//! to a staging file that is renamed into place. A process killed mid-write leaves at most a
//! staging file, whose name does not end in `.parquet`, so no reader ever sees it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Why a table location cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("cannot create or sync {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("`{uri}` is not a URI an object store understands: {reason}")]
    Uri { uri: String, reason: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// A directory of Parquet files, local or in an object store.
#[derive(Clone)]
pub struct TableLocation {
    store: Arc<dyn ObjectStore>,
    root: Path,
    uri: String,
    /// The directory, when the location is local: written files are synced to disk there.
    directory: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for TableLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLocation").field("uri", &self.uri).finish()
    }
}

impl TableLocation {
    /// The location `uri` (a directory, created if missing, or an object-store URI), with the
    /// object store's settings (`aws_endpoint`, `aws_region`, `allow_http`…) from the process's
    /// `AWS_*` variables (as the index reads them) and then `options`, which win.
    pub fn open(uri: &str, options: &BTreeMap<String, String>) -> Result<Self, LocationError> {
        let (store, root, directory): (Arc<dyn ObjectStore>, Path, _) = if uri.contains("://") {
            let url = url::Url::parse(uri).map_err(|error| LocationError::Uri {
                uri: uri.to_owned(),
                reason: error.to_string(),
            })?;
            let from_environment = std::env::vars()
                .filter(|(key, _)| key.starts_with("AWS_"))
                .map(|(key, value)| (key.to_ascii_lowercase(), value));
            let settings: BTreeMap<String, String> = from_environment.chain(options.clone()).collect();
            let (store, root) = object_store::parse_url_opts(&url, settings).map_err(|error| LocationError::Uri {
                uri: uri.to_owned(),
                reason: error.to_string(),
            })?;
            (Arc::from(store), root, None)
        } else {
            std::fs::create_dir_all(uri).map_err(|source| LocationError::Directory {
                path: uri.to_owned(),
                source,
            })?;
            let store = LocalFileSystem::new_with_prefix(uri)?;
            (Arc::new(store), Path::default(), Some(std::path::PathBuf::from(uri)))
        };
        Ok(Self {
            store,
            root,
            uri: uri.to_owned(),
            directory,
        })
    }

    /// The URI it was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    /// Writes `bytes` to `relative` (e.g. `audit_events/date=2026-12-07/part-….parquet`) in one
    /// piece.
    /// In a directory the file and its directory are synced before this returns, so a file
    /// whose messages were acknowledged survives a power loss too, not only a crash.
    pub async fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), LocationError> {
        self.store.put(&self.path(relative), PutPayload::from(bytes)).await?;
        if let Some(directory) = &self.directory {
            let file = directory.join(relative);
            let synced = tokio::task::spawn_blocking(move || sync_to_disk(&file))
                .await
                .map_err(|error| std::io::Error::other(error.to_string()));
            synced
                .and_then(|result| result)
                .map_err(|source| LocationError::Directory {
                    path: relative.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The Parquet files under `relative`, as paths relative to the location, sorted.
    pub async fn parquet_files(&self, relative: &str) -> Result<Vec<String>, LocationError> {
        let prefix = self.path(relative);
        let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let root = self.root.as_ref();
        let mut files: Vec<String> = listed
            .into_iter()
            .map(|meta| meta.location.as_ref().to_owned())
            .filter(|path| path.ends_with(".parquet"))
            .map(|path| {
                path.strip_prefix(root)
                    .unwrap_or(&path)
                    .trim_start_matches('/')
                    .to_owned()
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// The whole file at `relative`.
    pub async fn read(&self, relative: &str) -> Result<Bytes, LocationError> {
        Ok(self.store.get(&self.path(relative)).await?.bytes().await?)
    }
}

/// Syncs `file` and the directory that names it.
fn sync_to_disk(file: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    match file.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_written_whole_listed_by_suffix_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let location = TableLocation::open(dir.path().join("audit").to_str().unwrap(), &BTreeMap::new()).unwrap();
        location
            .put("audit_events/date=2026-12-07/part-1.parquet", b"one".to_vec())
            .await
            .unwrap();
        location
            .put("audit_events/date=2026-12-08/part-2.parquet", b"two".to_vec())
            .await
            .unwrap();
        // What a process killed mid-write leaves behind: a staging file, never listed.
        let staged = dir.path().join("audit/audit_events/date=2026-12-08/part-3.parquet#1");
        std::fs::write(&staged, b"half").unwrap();
        let files = location.parquet_files("audit_events").await.unwrap();
        assert_eq!(
            files,
            [
                "audit_events/date=2026-12-07/part-1.parquet",
                "audit_events/date=2026-12-08/part-2.parquet"
            ]
        );
        assert_eq!(location.read(&files[1]).await.unwrap().as_ref(), b"two");
        assert!(location.parquet_files("answers").await.unwrap().is_empty());
    }

    #[test]
    fn an_unknown_scheme_is_a_clear_error() {
        let error = TableLocation::open("ftp://somewhere/audit", &BTreeMap::new()).unwrap_err();
        assert!(error.to_string().contains("ftp://somewhere/audit"), "{error}");
    }
}
