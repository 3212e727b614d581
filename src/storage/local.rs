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

/// `LocalFileSystem` with HEAD answered on the calling thread, conditional updates, and
/// an ETag an in-place rewrite cannot keep.
/// A HEAD is one `stat`; `LocalFileSystem` sends every call to tokio's blocking pool, whose
/// two thread switches cost more than the `stat` (about a sixth of a warm index search,
/// which HEADs its file to check the version). `PutMode::Update`, which `LocalFileSystem`
/// does not implement, is a compare-and-swap on the ETag under an exclusive lock of the
/// directory (see [`update_if`]): leases are renewed and taken over on local roots as on
/// cloud stores. The ETag — on every HEAD, GET, listing and write result alike — is the
/// inode, modification time, change time and size: `LocalFileSystem`'s leaves out the change
/// time, so a file rewritten in place with its size kept and its modification time put back
/// (`cp -p`, `rsync -t`, a restore tool) kept its ETag; no user tool can set a change time
/// back. Everything else is `LocalFileSystem`'s own.
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
    /// What `LocalFileSystem` answers to a HEAD of `location`, with this store's ETag.
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
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: modified.into(),
            size: md.len(),
            e_tag: Some(e_tag(&md).map_err(generic)?),
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

/// A local file's ETag: inode, modification time in microseconds, change time in
/// nanoseconds, size.
fn e_tag(md: &std::fs::Metadata) -> std::io::Result<String> {
    let micros = md
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    Ok(format!(
        "{:x}-{micros:x}-{:x}-{:x}",
        inode(md),
        changed_nanos(md),
        md.len()
    ))
}

fn generic(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    }
}

/// `meta` (as `LocalFileSystem` reported it) with this store's ETag, from a `stat` of the
/// file; unchanged when the file is gone or no longer the one `meta` describes.
fn restamp(path: &std::path::Path, mut meta: ObjectMeta) -> ObjectMeta {
    if let Ok(md) = std::fs::metadata(path)
        && md.len() == meta.size
        && md
            .modified()
            .ok()
            .map(chrono::DateTime::<chrono::Utc>::from)
            == Some(meta.last_modified)
        && let Ok(tag) = e_tag(&md)
    {
        meta.e_tag = Some(tag);
    }
    meta
}

/// A listed `meta` with this store's ETag (unchanged when its path has no file name here).
fn restamp_listed(fs: &LocalFileSystem, meta: ObjectMeta) -> ObjectMeta {
    match fs.path_to_filesystem(&meta.location) {
        Ok(p) => restamp(&p, meta),
        Err(_) => meta,
    }
}

/// This store's ETag of the file at `path`, for a write's result.
fn written(path: &std::path::Path, mut result: PutResult) -> PutResult {
    if let Ok(tag) = std::fs::metadata(path).and_then(|md| e_tag(&md)) {
        result.e_tag = Some(tag);
    }
    result
}

/// Whether `options` carries a precondition, which this store checks itself (against its
/// own ETag) rather than leave to `LocalFileSystem`.
fn has_preconditions(o: &GetOptions) -> bool {
    o.if_match.is_some()
        || o.if_none_match.is_some()
        || o.if_modified_since.is_some()
        || o.if_unmodified_since.is_some()
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
        Ok(md) => e_tag(&md).map_err(generic)?,
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
        e_tag: Some(e_tag(&md).map_err(generic)?),
        version: None,
    })
}

#[cfg(unix)]
fn inode(md: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(md)
}

#[cfg(unix)]
fn changed_nanos(md: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128
}

/// Where the platform has no change time: the creation time where it has one.
#[cfg(not(unix))]
fn changed_nanos(md: &std::fs::Metadata) -> i128 {
    md.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// As `LocalFileSystem`: no inode in the ETag where the platform has none.
#[cfg(not(unix))]
fn inode(_md: &std::fs::Metadata) -> u64 {
    0
}

impl LocalStore {
    /// A listing with this store's ETags.
    fn restamped(
        &self,
        listed: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let fs = LocalFileSystem::new();
        listed.map(move |m| Ok(restamp_listed(&fs, m?))).boxed()
    }
}

/// `LocalFileSystem`'s multipart upload, completing with this store's ETag.
#[derive(Debug)]
struct Upload {
    inner: Box<dyn MultipartUpload>,
    path: std::path::PathBuf,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.inner.complete().await?;
        Ok(written(&self.path, result))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
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
        let result = self.inner.put_opts(location, payload, opts).await?;
        Ok(written(&self.inner.path_to_filesystem(location)?, result))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let path = self.inner.path_to_filesystem(location)?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(Upload { inner, path }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.head {
            return self.head_inline(location, &options);
        }
        let mut options = options;
        if has_preconditions(&options) {
            let head = GetOptions {
                head: true,
                ..options.clone()
            };
            self.head_inline(location, &head)?;
            options.if_match = None;
            options.if_none_match = None;
            options.if_modified_since = None;
            options.if_unmodified_since = None;
        }
        let path = self.inner.path_to_filesystem(location)?;
        let mut got = self.inner.get_opts(location, options).await?;
        got.meta = restamp(&path, got.meta);
        Ok(got)
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
        self.restamped(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.restamped(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects = listed
            .objects
            .into_iter()
            .map(|m| restamp_listed(&self.inner, m))
            .collect();
        Ok(listed)
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
        let (a, b) = (
            ours.head(&path).await.unwrap(),
            theirs.head(&path).await.unwrap(),
        );
        assert_eq!(
            (&a.location, a.last_modified, a.size),
            (&b.location, b.last_modified, b.size)
        );
        assert_ne!(a.e_tag, None);
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
        // A precondition is checked against this store's ETag.
        for head in [true, false] {
            let stale = GetOptions::new()
                .with_head(head)
                .with_if_match(Some("other".to_string()));
            assert!(ours.get_opts(&path, stale).await.is_err());
            let current = GetOptions::new()
                .with_head(head)
                .with_if_match(a.e_tag.clone());
            assert!(ours.get_opts(&path, current).await.is_ok());
        }
    }

    /// A rewrite in place that keeps the size and puts the modification time back changes
    /// the ETag, and HEAD, GET, listings and write results all report the same one.
    #[tokio::test]
    async fn an_in_place_rewrite_with_its_mtime_put_back_changes_the_etag() {
        use futures::TryStreamExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.parquet");
        let store = LocalStore::default();
        std::fs::write(&file, b"").unwrap();
        let path = Path::from_filesystem_path(&file).unwrap();
        let put = store
            .put(&path, PutPayload::from_static(b"0123456789"))
            .await
            .unwrap();
        let first = store.head(&path).await.unwrap();
        assert_eq!(
            put.e_tag, first.e_tag,
            "the write's result is the HEAD's ETag"
        );
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        {
            use std::io::{Seek, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.write_all(b"9876543210").unwrap();
            f.set_modified(mtime).unwrap();
        }
        let second = store.head(&path).await.unwrap();
        assert_eq!(
            (second.size, second.last_modified),
            (first.size, first.last_modified)
        );
        assert_ne!(second.e_tag, first.e_tag, "the change time is in the ETag");
        let got = store.get(&path).await.unwrap().meta;
        let dir_path = Path::from_filesystem_path(dir.path()).unwrap();
        let listed: Vec<ObjectMeta> = store.list(Some(&dir_path)).try_collect().await.unwrap();
        let delimited = store.list_with_delimiter(Some(&dir_path)).await.unwrap();
        assert_eq!(got.e_tag, second.e_tag);
        assert_eq!(listed[0].e_tag, second.e_tag);
        assert_eq!(delimited.objects[0].e_tag, second.e_tag);
        let mut up = store.put_multipart(&path).await.unwrap();
        up.put_part(PutPayload::from_static(b"abc")).await.unwrap();
        let done = up.complete().await.unwrap();
        assert_eq!(done.e_tag, store.head(&path).await.unwrap().e_tag);
    }
}
