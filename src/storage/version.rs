//! Distinct versions of a file get distinct modification times.
//!
//! DataFusion's footer and statistics caches check a cached entry against a file's size and
//! modification time only. A rewrite that keeps the size within the store's time resolution
//! (a second on S3 and Azure) — or, on a local disk, one whose modification time was put
//! back — would be answered from the entry of the version before. This store wrapper
//! remembers, per object, the version it last reported (ETag or store version) and the time
//! it reported with it; a new version whose time is not later gets one nanosecond more than
//! that, so those caches miss exactly when the version changed, and never otherwise.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use crate::lru::{BoundedLru, Weighed};

/// Objects whose last reported version is remembered. Past it, the least recently seen
/// are forgotten (and report their own times again).
const REMEMBERED: u64 = 1 << 17;

/// The version last reported for one object, and the time reported with it.
struct Seen {
    version: String,
    size: u64,
    reported: DateTime<Utc>,
}

impl Weighed for Seen {
    fn weight(&self) -> u64 {
        1
    }
}

/// The wrapper (see the module docs).
pub(crate) struct VersionedTimes {
    inner: Arc<dyn ObjectStore>,
    seen: Arc<Mutex<BoundedLru<Path, Seen>>>,
}

impl VersionedTimes {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        VersionedTimes {
            inner,
            seen: Arc::new(Mutex::new(BoundedLru::new(REMEMBERED))),
        }
    }
}

/// `meta` with the time this version of its object goes by.
fn stamp(seen: &Mutex<BoundedLru<Path, Seen>>, mut meta: ObjectMeta) -> ObjectMeta {
    let Some(version) = meta.version.clone().or_else(|| meta.e_tag.clone()) else {
        return meta;
    };
    let mut seen = seen.lock().expect("lock");
    let reported = match seen.get(&meta.location) {
        Some(s) if s.version == version && s.size == meta.size => s.reported,
        Some(s) if meta.last_modified <= s.reported => {
            s.reported + chrono::Duration::nanoseconds(1)
        }
        _ => meta.last_modified,
    };
    seen.put(
        meta.location.clone(),
        Seen {
            version,
            size: meta.size,
            reported,
        },
    );
    meta.last_modified = reported;
    meta
}

impl fmt::Debug for VersionedTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.inner)
    }
}

impl fmt::Display for VersionedTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for VersionedTimes {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut got = self.inner.get_opts(location, options).await?;
        got.meta = stamp(&self.seen, got.meta);
        Ok(got)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let seen = self.seen.clone();
        self.inner
            .list(prefix)
            .map(move |m| m.map(|m| stamp(&seen, m)))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let seen = self.seen.clone();
        self.inner
            .list_with_offset(prefix, offset)
            .map(move |m| m.map(|m| stamp(&seen, m)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects = listed
            .objects
            .into_iter()
            .map(|m| stamp(&self.seen, m))
            .collect();
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    /// Same size, same time, another version: a later time; the same version: the same
    /// time, from HEAD and listing alike.
    #[tokio::test]
    async fn a_new_version_of_the_same_size_and_time_reports_a_later_time() {
        let store = VersionedTimes::new(Arc::new(InMemory::new()));
        let p = Path::from("a.parquet");
        store
            .put(&p, PutPayload::from_static(b"0123"))
            .await
            .unwrap();
        let first = store.head(&p).await.unwrap();
        assert_eq!(
            store.head(&p).await.unwrap().last_modified,
            first.last_modified
        );
        let mut m = first.clone();
        m.e_tag = Some("another".into());
        let seen = store.seen.clone();
        let changed = stamp(&seen, m.clone());
        assert!(changed.last_modified > first.last_modified);
        assert_eq!(
            stamp(&seen, m).last_modified,
            changed.last_modified,
            "stable"
        );
        // The store's own next version is later still, and a listing agrees with HEAD.
        store
            .put(&p, PutPayload::from_static(b"3210"))
            .await
            .unwrap();
        let head = store.head(&p).await.unwrap();
        assert!(
            head.last_modified > changed.last_modified || head.last_modified > first.last_modified
        );
        let listed: Vec<ObjectMeta> = futures::TryStreamExt::try_collect(store.list(None))
            .await
            .unwrap();
        assert_eq!(listed[0].last_modified, head.last_modified);
    }
}
