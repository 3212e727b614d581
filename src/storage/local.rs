//! `file://` and `memory://`: always compiled in.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions,
};

use crate::error::Result;
use crate::storage::url::{Scheme, StorageUrl};

pub(crate) fn build(url: &StorageUrl) -> Result<Arc<dyn ObjectStore>> {
    Ok(match url.scheme() {
        // Rooted at `/`: object paths of `file://` URLs are absolute paths.
        Scheme::File => Arc::new(LocalStore::default()),
        _ => Arc::new(InMemory::new()),
    })
}

/// `LocalFileSystem` with HEAD answered on the calling thread, and conditional updates.
/// A HEAD is one `stat`; `LocalFileSystem` sends every call to tokio's blocking pool, whose
/// two thread switches cost more than the `stat` (about a sixth of a warm index search,
/// which HEADs its file to check the version). `PutMode::Update`, which `LocalFileSystem`
/// does not implement, is a compare-and-swap on the ETag under an exclusive lock of the
/// directory (see [`update_if`]): leases are renewed and taken over on local roots as on
/// cloud stores. Everything else is `LocalFileSystem`'s own.
#[derive(Debug, Default)]
pub(crate) struct LocalStore {
    inner: LocalFileSystem,
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl LocalStore {
    /// What `LocalFileSystem` answers to a HEAD of `location` (the same ETag scheme:
    /// inode, modification time in microseconds, size).
    fn head_inline(
        &self,
        location: &Path,
        options: &GetOptions,
    ) -> object_store::Result<GetResult> {
        let path = self.inner.path_to_filesystem(location)?;
        let not_found = |source: std::io::Error| object_store::Error::NotFound {
            path: path.display().to_string(),
            source: Box::new(source),
        };
        let md = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(e),
            _ => object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            },
        })?;
        if md.is_dir() {
            return Err(not_found(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "is directory",
            )));
        }
        let modified = md.modified().map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?;
        let micros = modified
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: modified.into(),
            size: md.len(),
            e_tag: Some(e_tag(&md, micros)),
            version: None,
        };
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => r
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
            attributes: Attributes::default(),
            range,
            meta,
        })
    }
}

/// `LocalFileSystem`'s ETag: inode, modification time in microseconds, size.
fn e_tag(md: &std::fs::Metadata, micros: u128) -> String {
    format!("{:x}-{micros:x}-{:x}", inode(md), md.len())
}

fn modified_micros(md: &std::fs::Metadata) -> std::io::Result<u128> {
    Ok(md
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros())
}

/// Writes `payload` to `path` if the file's ETag is still `expected`: the staged bytes
/// (`<name>#<digits>`, as `LocalFileSystem` stages its writes) are renamed over the file
/// while an exclusive `flock` of the directory is held. Every compare-and-swap of the
/// directory takes the same lock, so two processes of one kernel — containers sharing the
/// directory included — never both succeed from one version; a file that is missing or
/// changed is `Precondition`.
fn update_if(
    path: &std::path::Path,
    payload: PutPayload,
    expected: Option<&str>,
) -> object_store::Result<PutResult> {
    let generic = |e: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    };
    let precondition = |why: &str| object_store::Error::Precondition {
        path: path.display().to_string(),
        source: why.to_string().into(),
    };
    let dir = path
        .parent()
        .ok_or_else(|| precondition("no parent directory"))?;
    let lock = std::fs::File::open(dir).map_err(generic)?;
    lock.lock().map_err(generic)?;
    let current = match std::fs::metadata(path) {
        Ok(md) => e_tag(&md, modified_micros(&md).map_err(generic)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(precondition("the object does not exist"));
        }
        Err(e) => return Err(generic(e)),
    };
    if expected != Some(current.as_str()) {
        return Err(precondition("the object changed"));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let staged = path.with_file_name(format!("{name}#{}", rand::random::<u32>()));
    let written = (|| -> std::io::Result<std::fs::Metadata> {
        use std::io::Write;
        let mut f = std::fs::File::create_new(&staged)?;
        for chunk in payload.iter() {
            f.write_all(chunk)?;
        }
        std::fs::rename(&staged, path)?;
        std::fs::metadata(path)
    })();
    let md = written.inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    });
    let md = md.map_err(generic)?;
    Ok(PutResult {
        e_tag: Some(e_tag(&md, modified_micros(&md).map_err(generic)?)),
        version: None,
    })
}

#[cfg(unix)]
fn inode(md: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(md)
}

/// As `LocalFileSystem`: no inode in the ETag where the platform has none.
#[cfg(not(unix))]
fn inode(_md: &std::fs::Metadata) -> u64 {
    0
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if let PutMode::Update(v) = &opts.mode {
            let path = self.inner.path_to_filesystem(location)?;
            let expected = v.e_tag.clone();
            return tokio::task::spawn_blocking(move || {
                update_if(&path, payload, expected.as_deref())
            })
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            return self.head_inline(location, &options);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// The inline HEAD answers what `LocalFileSystem` answers, including the ETag the
    /// manifests record and the errors of a missing file and of a directory.
    #[tokio::test]
    async fn an_inline_head_equals_local_file_systems() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.parquet");
        std::fs::write(&file, b"0123456789").unwrap();
        let ours = LocalStore::default();
        let theirs = LocalFileSystem::new();
        let path = Path::from_filesystem_path(&file).unwrap();
        assert_eq!(
            ours.head(&path).await.unwrap(),
            theirs.head(&path).await.unwrap()
        );
        let missing = Path::from_filesystem_path(dir.path())
            .unwrap()
            .join("missing");
        assert!(matches!(
            ours.head(&missing).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let directory = Path::from_filesystem_path(dir.path()).unwrap();
        assert!(matches!(
            ours.head(&directory).await,
            Err(object_store::Error::NotFound { .. })
        ));
        // A precondition is checked as LocalFileSystem checks it.
        let stale = GetOptions::new()
            .with_head(true)
            .with_if_match(Some("other".to_string()));
        assert!(ours.get_opts(&path, stale).await.is_err());
    }
}
