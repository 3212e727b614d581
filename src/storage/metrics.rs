//! A store layer that counts requests by kind: used for the per-query request counts that
//! `jammi_storage_stats()` reports, and by the benchmarks.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Request counters, shared by every store wrapped with them.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// GET requests (whole or ranged).
    pub get: AtomicU64,
    /// Ranged reads issued through `get_ranges` (each range counts).
    pub get_range: AtomicU64,
    /// HEAD requests.
    pub head: AtomicU64,
    /// PUT requests (single-part).
    pub put: AtomicU64,
    /// Multipart uploads started.
    pub multipart: AtomicU64,
    /// LIST requests.
    pub list: AtomicU64,
    /// DELETE requests.
    pub delete: AtomicU64,
    /// COPY requests.
    pub copy: AtomicU64,
}

/// A snapshot of [`RequestCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSnapshot {
    /// See [`RequestCounts`].
    pub get: u64,
    /// See [`RequestCounts`].
    pub get_range: u64,
    /// See [`RequestCounts`].
    pub head: u64,
    /// See [`RequestCounts`].
    pub put: u64,
    /// See [`RequestCounts`].
    pub multipart: u64,
    /// See [`RequestCounts`].
    pub list: u64,
    /// See [`RequestCounts`].
    pub delete: u64,
    /// See [`RequestCounts`].
    pub copy: u64,
}

impl RequestSnapshot {
    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        self.get
            + self.get_range
            + self.head
            + self.put
            + self.multipart
            + self.list
            + self.delete
            + self.copy
    }

    /// Counter-wise difference `self - earlier`.
    pub fn since(&self, earlier: &RequestSnapshot) -> RequestSnapshot {
        RequestSnapshot {
            get: self.get - earlier.get,
            get_range: self.get_range - earlier.get_range,
            head: self.head - earlier.head,
            put: self.put - earlier.put,
            multipart: self.multipart - earlier.multipart,
            list: self.list - earlier.list,
            delete: self.delete - earlier.delete,
            copy: self.copy - earlier.copy,
        }
    }
}

impl RequestCounts {
    /// Current values.
    pub fn snapshot(&self) -> RequestSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestSnapshot {
            get: l(&self.get),
            get_range: l(&self.get_range),
            head: l(&self.head),
            put: l(&self.put),
            multipart: l(&self.multipart),
            list: l(&self.list),
            delete: l(&self.delete),
            copy: l(&self.copy),
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// An `ObjectStore` that counts the requests it forwards.
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<RequestCounts>,
}

impl CountingStore {
    /// Wraps `inner`, adding to `counts`.
    pub fn new(inner: Arc<dyn ObjectStore>, counts: Arc<RequestCounts>) -> Self {
        CountingStore { inner, counts }
    }
}

impl fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({:?})", self.inner)
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        inc(&self.counts.put);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        inc(&self.counts.multipart);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head {
            inc(&self.counts.head);
        } else {
            inc(&self.counts.get);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.counts
            .get_range
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        inc(&self.counts.delete);
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        inc(&self.counts.list);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        inc(&self.counts.list);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        inc(&self.counts.list);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        inc(&self.counts.copy);
        self.inner.copy_opts(from, to, options).await
    }
}
