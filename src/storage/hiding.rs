//! What SQL's listings leave out: objects an upper layer proves are its own bookkeeping.
//!
//! A directory a user reads as a source may also hold the sidecars jammi-db wrote beside an
//! indexed file (`<stem>.idx.manifest.json`, a lease, a graph). DataFusion's listing tables
//! select files by extension only, so a JSON source would read a manifest as data. The
//! stores the registry hands to DataFusion hold back, from every listing, the objects a
//! [`ListingFilter`] names as candidates, and drop those it proves are its own once the
//! listing is complete. Everything else passes through as it streams; jammi-db's own code
//! uses the unfiltered stores.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Decides which listed objects SQL does not see.
#[async_trait]
pub trait ListingFilter: Send + Sync + fmt::Debug {
    /// Whether the object named `file_name` might be hidden (by name alone, cheap). Only
    /// candidates are held back until a listing ends.
    fn is_candidate(&self, file_name: &str) -> bool;

    /// Of the candidates of one listing, the locations to hide. Reads `store` as it needs
    /// to prove ownership; anything it cannot prove stays visible.
    async fn hidden(
        &self,
        store: &Arc<dyn ObjectStore>,
        candidates: &[ObjectMeta],
    ) -> HashSet<Path>;
}

/// A store whose listings leave out what its filter proves (see the module docs).
pub(crate) struct Hiding {
    inner: Arc<dyn ObjectStore>,
    filter: Arc<dyn ListingFilter>,
}

impl Hiding {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, filter: Arc<dyn ListingFilter>) -> Self {
        Hiding { inner, filter }
    }
}

/// `listed` with the candidates held back to its end, then those not hidden.
fn filtered(
    store: Arc<dyn ObjectStore>,
    filter: Arc<dyn ListingFilter>,
    listed: BoxStream<'static, Result<ObjectMeta>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    let held = Arc::new(std::sync::Mutex::new(Vec::<ObjectMeta>::new()));
    let passing = {
        let (filter, held) = (filter.clone(), held.clone());
        listed.try_filter(move |m| {
            let candidate = filter.is_candidate(m.location.filename().unwrap_or_default());
            if candidate {
                held.lock().expect("lock").push(m.clone());
            }
            futures::future::ready(!candidate)
        })
    };
    let rest = futures::stream::once(async move {
        let candidates = std::mem::take(&mut *held.lock().expect("lock"));
        if candidates.is_empty() {
            return futures::stream::empty().boxed();
        }
        let hidden = filter.hidden(&store, &candidates).await;
        futures::stream::iter(
            candidates
                .into_iter()
                .filter(move |m| !hidden.contains(&m.location))
                .map(Ok),
        )
        .boxed()
    })
    .flatten();
    passing.chain(rest).boxed()
}

impl fmt::Debug for Hiding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.inner)
    }
}

impl fmt::Display for Hiding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Hiding {
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
        self.inner.get_opts(location, options).await
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
        let listed = self.inner.list(prefix);
        filtered(self.inner.clone(), self.filter.clone(), listed)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let listed = self.inner.list_with_offset(prefix, offset);
        filtered(self.inner.clone(), self.filter.clone(), listed)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        let candidates: Vec<ObjectMeta> = listed
            .objects
            .iter()
            .filter(|m| {
                self.filter
                    .is_candidate(m.location.filename().unwrap_or_default())
            })
            .cloned()
            .collect();
        if !candidates.is_empty() {
            let hidden = self.filter.hidden(&self.inner, &candidates).await;
            listed.objects.retain(|m| !hidden.contains(&m.location));
        }
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
