//! `ResultStore`: result tables (Parquet + USearch sidecars) under a root on any backend,
//! with a crash-safe commit, delete and recovery (DESIGN §4).

pub(crate) mod hidden;
pub mod identity;
pub mod lease;
pub mod maintain;
pub mod read;
pub mod recovery;
pub(crate) mod txn;
pub mod versions;
pub(crate) mod write;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::catalog::Catalog;
use crate::error::{JammiError, Result};
pub use crate::format::manifest::{FileEntry, FileRole, IndexInfo, Manifest, TableKind};
use crate::format::naming::{self, Siblings};
use crate::index::cache::{IndexCache, LoadedIndex};
use crate::index::{IndexParams, Quantization};
use crate::storage::{StorageRegistry, StorageUrl};
use lease::{LeaseState, OwnedObject};
pub use recovery::RecoveryReport;
use txn::Txn;
pub use write::writer_properties;
use write::{CommitInfo, IndexRequest};

/// What a job is writing: naming components, key column and the optional vector index.
#[derive(Debug, Clone, Default)]
pub struct TableSpec {
    /// Source the rows came from (first name component).
    pub source: String,
    /// Task, e.g. `text_embedding` (second component).
    pub task: String,
    /// Model id, e.g. `BAAI/bge-m3` (third component, sanitised).
    pub model: String,
    /// Explicit table name instead of the generated `{source}__{task}__{model}__{ts}_{hex}`.
    pub name: Option<String>,
    /// Key column (recorded in the manifest).
    pub key_column: Option<String>,
    /// Vector column to index (`FixedSizeList<Float32>` or `List<Float32|Float64>`).
    pub vector_column: Option<String>,
    /// HNSW parameters and metric of the index.
    pub index: IndexParams,
    /// The table's own segment budget for later writes, recorded in its manifest
    /// (`None`: the store's).
    pub segment_max_bytes: Option<u64>,
}

/// What one change of a result table does besides adding rows.
#[derive(Debug, Clone)]
pub struct Change {
    /// What the version records it as.
    pub operation: versions::Operation,
    /// Rows deleted, per segment path of the version the change was planned on.
    pub deleted: Vec<(String, roaring::RoaringBitmap)>,
    /// The segment budget of this write (a session's `jammi.segment_max_bytes`, a call's
    /// argument); `None`: the table's own, else the store's.
    pub segment_max_bytes: Option<u64>,
    /// Segments (paths, of the version the change was planned on) the added ones replace
    /// — a compaction; empty: the added segments come after the others.
    pub replaced: Vec<String>,
    /// Whether a change that adds segments then merges a size tier they filled (a
    /// session's `jammi.auto_compact`); `None`: the store's setting.
    pub auto_compact: Option<bool>,
}

/// A session's settings for the changes it makes (`SET jammi.segment_max_bytes`, `SET
/// jammi.auto_compact`); `None`: the table's, else the store's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteSettings {
    /// Bytes of rows per segment the change adds.
    pub segment_max_bytes: Option<u64>,
    /// Whether the change merges a size tier its segments filled.
    pub auto_compact: Option<bool>,
}

impl Change {
    /// A change recorded as `operation`, deleting `deleted`, with the default budget.
    pub fn new(
        operation: versions::Operation,
        deleted: Vec<(String, roaring::RoaringBitmap)>,
    ) -> Self {
        Change {
            operation,
            deleted,
            segment_max_bytes: None,
            replaced: Vec::new(),
            auto_compact: None,
        }
    }

    /// This change with a session's write settings.
    pub fn with_settings(self, settings: WriteSettings) -> Self {
        Change {
            segment_max_bytes: settings.segment_max_bytes,
            auto_compact: settings.auto_compact,
            ..self
        }
    }
}

/// Removes the deletion files `attempt` wrote beside `parent` (a version that another
/// writer's took the number of): this call created them under fresh names.
async fn discard_deletions(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    parent: &versions::TableVersion,
    attempt: &versions::TableVersion,
) {
    for seg in &attempt.segments {
        let Some(d) = &seg.deleted else { continue };
        let before = parent.segments.iter().find(|p| p.path == seg.path);
        if before.and_then(|p| p.deleted.as_ref()) == Some(d) {
            continue;
        }
        let Ok(url) = root.join(&d.path) else {
            continue;
        };
        let Ok(path) = url.object_path() else {
            continue;
        };
        if let Err(e) = store.delete(&path).await {
            tracing::warn!("left deletion file {} of a lost commit: {e}", d.path);
        }
    }
}

/// `segments` (a parent version's) with the segments `replaced` (as `base` had them)
/// swapped for `added`, placed where the first of them was; refused when one of them is
/// gone or has rows deleted that `base` did not (they would come back).
fn replace_segments(
    segments: Vec<versions::SegmentRef>,
    base: &versions::TableVersion,
    replaced: &[String],
    added: &[versions::SegmentRef],
) -> std::result::Result<Vec<versions::SegmentRef>, String> {
    for path in replaced {
        let now = segments.iter().find(|s| &s.path == path);
        let then = base.segments.iter().find(|s| &s.path == path);
        match (now, then) {
            (Some(n), Some(t)) if n.deleted == t.deleted => {}
            (Some(_), Some(_)) => {
                return Err(format!("rows of segment {path} were deleted meanwhile"));
            }
            _ => return Err(format!("segment {path} was replaced meanwhile")),
        }
    }
    let first = segments
        .iter()
        .position(|s| replaced.contains(&s.path))
        .unwrap_or(segments.len());
    let mut out: Vec<versions::SegmentRef> = segments[..first]
        .iter()
        .filter(|s| !replaced.contains(&s.path))
        .cloned()
        .collect();
    out.extend(added.iter().cloned());
    out.extend(
        segments[first..]
            .iter()
            .filter(|s| !replaced.contains(&s.path))
            .cloned(),
    );
    Ok(out)
}

/// Deletes the object at `url`, which the caller proved jammi-db's; one already gone is fine.
pub(crate) async fn delete_if_present(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
) -> Result<()> {
    match store.delete(&url.object_path()?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(JammiError::storage(url, e)),
    }
}

/// Versions a writer tries before giving up to others committing at the same time.
const MAX_COMMIT_ATTEMPTS: usize = 64;

/// Refuses appended rows unless they have `table`'s columns: the same names, in any order
/// of the same length, each with the table's type.
fn check_append_schema(name: &str, table: &SchemaRef, rows: &SchemaRef) -> Result<()> {
    for f in table.fields() {
        match rows.field_with_name(f.name()) {
            Err(_) => {
                return Err(JammiError::InvalidInput(format!(
                    "rows appended to {name} have no column '{}'; its columns: {}",
                    f.name(),
                    write::column_names(table)
                )));
            }
            Ok(r) if r.data_type() != f.data_type() => {
                return Err(JammiError::InvalidInput(format!(
                    "column '{}' of rows appended to {name} is {}, the table's is {}",
                    f.name(),
                    r.data_type(),
                    f.data_type()
                )));
            }
            Ok(_) => {}
        }
    }
    if let Some(extra) = rows
        .fields()
        .iter()
        .find(|r| table.field_with_name(r.name()).is_err())
    {
        return Err(JammiError::InvalidInput(format!(
            "rows appended to {name} have a column '{}' the table does not; its columns: {}",
            extra.name(),
            write::column_names(table)
        )));
    }
    Ok(())
}

/// Result tables under one root URL.
pub struct ResultStore {
    root: StorageUrl,
    registry: StorageRegistry,
    catalog: Arc<Catalog>,
    store: std::sync::OnceLock<Arc<dyn ObjectStore>>,
    index_cache: Arc<IndexCache>,
    lease_ttl: Option<Duration>,
    segment_max_bytes: Option<u64>,
    auto_compact: Option<bool>,
}

/// Default in-memory size of the rows of one segment an append writes: its index build then
/// needs about as much again, well within a small machine.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 256 << 20;

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore")
            .field("root", &self.root.to_string())
            .finish()
    }
}

impl ResultStore {
    /// A store of result tables under `root`, using `registry` for storage access and
    /// `catalog` for the root's cloud settings.
    pub fn with_root(
        root: StorageUrl,
        registry: StorageRegistry,
        catalog: Arc<Catalog>,
    ) -> Result<Self> {
        root.check_enabled()?;
        Ok(ResultStore {
            root: root.as_prefix(),
            registry,
            catalog,
            store: std::sync::OnceLock::new(),
            index_cache: Arc::new(IndexCache::with_defaults()),
            lease_ttl: None,
            segment_max_bytes: None,
            auto_compact: None,
        })
    }

    /// Whether appends, updates and merges that fill a size tier of small segments also
    /// merge it (see [`maintain::tier_to_merge`]), so a table that grows by many small
    /// writes keeps few segments. Default: `JAMMI_AUTO_COMPACT` (`true` or `false`), else
    /// on.
    pub fn with_auto_compact(mut self, on: bool) -> Self {
        self.auto_compact = Some(on);
        self
    }

    /// Whether a change with `setting` (a session's) merges filled tiers.
    fn auto_compacts(&self, setting: Option<bool>) -> Result<bool> {
        if let Some(on) = setting.or(self.auto_compact) {
            return Ok(on);
        }
        match std::env::var("JAMMI_AUTO_COMPACT") {
            Err(_) => Ok(true),
            Ok(v) => crate::sql::options::parse_bool(&v)
                .map_err(|e| JammiError::Config(format!("JAMMI_AUTO_COMPACT: {e}"))),
        }
    }

    /// Appends of more than `bytes` of rows (Arrow's in-memory size) are written as several
    /// segments of at most about that size each, so any write is done in bounded memory.
    /// Default: `JAMMI_SEGMENT_MAX_BYTES`, else [`DEFAULT_SEGMENT_MAX_BYTES`].
    pub fn with_segment_max_bytes(mut self, bytes: u64) -> Result<Self> {
        if bytes == 0 {
            return Err(JammiError::InvalidInput(
                "segment_max_bytes must be at least 1 byte".into(),
            ));
        }
        self.segment_max_bytes = Some(bytes);
        Ok(self)
    }

    /// The segment budget of a write asking for `asked`: else the table's own (recorded in
    /// its `manifest`), else the store's.
    fn budget_of(&self, asked: Option<u64>, manifest: &Manifest) -> Result<u64> {
        match asked.or(manifest.segment_max_bytes) {
            Some(b) => Ok(b),
            None => self.segment_budget(),
        }
    }

    fn segment_budget(&self) -> Result<u64> {
        if let Some(b) = self.segment_max_bytes {
            return Ok(b);
        }
        match std::env::var("JAMMI_SEGMENT_MAX_BYTES") {
            Err(_) => Ok(DEFAULT_SEGMENT_MAX_BYTES),
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| {
                    JammiError::Config(format!(
                        "JAMMI_SEGMENT_MAX_BYTES must be a positive number of bytes, got '{v}'"
                    ))
                }),
        }
    }

    /// Sets the TTL of this store's write leases (default: `JAMMI_LEASE_TTL_SECS`, else
    /// 60 s). A TTL below 10 s is refused: renewals could not land in time.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Result<Self> {
        self.lease_ttl = Some(lease::check_ttl(ttl)?);
        Ok(self)
    }

    fn ttl(&self) -> Result<Duration> {
        match self.lease_ttl {
            Some(t) => Ok(t),
            None => lease::ttl_from_env(),
        }
    }

    /// Replaces the index cache (to share one between stores, or set its budget).
    pub fn with_index_cache(mut self, cache: Arc<IndexCache>) -> Self {
        self.index_cache = cache;
        self
    }

    /// The root prefix.
    pub fn root(&self) -> &StorageUrl {
        &self.root
    }

    /// The registry used for storage access.
    pub fn registry(&self) -> &StorageRegistry {
        &self.registry
    }

    /// The catalog this store reports to.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The in-memory index cache.
    pub fn index_cache(&self) -> &Arc<IndexCache> {
        &self.index_cache
    }

    /// The object store of the root (built on first use).
    pub async fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        // A plain check-then-set (not `get_or_try_init` with a closure) keeps this future
        // `Send` for every caller; a race builds the store twice and keeps the first.
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let built = self
            .registry
            .store(&self.root, self.catalog.cloud())
            .await?;
        Ok(self.store.get_or_init(|| built).clone())
    }

    /// URL of a table's Parquet file.
    pub fn parquet_url(&self, name: &str) -> Result<StorageUrl> {
        naming::validate_table_name(name)?;
        Ok(Siblings::table(&self.root, name)?.parquet)
    }

    /// Writes a result table from a stream of batches and commits it. Returns its manifest.
    ///
    /// The write takes the table's lease, refuses a name whose objects exist (a committed
    /// table, or files jammi-db did not write), records every object before it becomes
    /// visible, and publishes the manifest last, create-only. A failed write removes what it
    /// wrote, and only that.
    pub async fn write_table<S>(
        &self,
        spec: &TableSpec,
        schema: SchemaRef,
        batches: S,
    ) -> Result<Manifest>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        let name = match &spec.name {
            Some(n) => {
                naming::validate_table_name(n)?;
                n.clone()
            }
            None => naming::table_name(&spec.source, &spec.task, &spec.model),
        };
        if let Some(k) = &spec.key_column
            && schema.index_of(k).is_err()
        {
            return Err(JammiError::InvalidInput(format!(
                "key column '{k}' not found; columns: {}",
                write::column_names(&schema)
            )));
        }
        // Versions left by a table of this name whose delete stopped half-way would
        // otherwise be read as this table's.
        let store = self.object_store().await?;
        if versions::latest_number(&store, &self.root, &name)
            .await?
            .is_some()
        {
            return Err(JammiError::InvalidInput(format!(
                "versions of an earlier table {name} remain under {}{}: delete {name} again \
                 to remove them",
                self.root,
                versions::table_dir(&name)
            )));
        }
        let s = Siblings::table(&self.root, &name)?;
        let manifest = self.write_at(&s, &name, spec, schema, batches).await?;
        self.catalog.note_table(&name);
        Ok(manifest)
    }

    /// [`write_table`](Self::write_table) for a stream of any size, in bounded memory: the
    /// first `segment_max_bytes` of rows (else the spec's, the store's budget) become the
    /// table as `write_table` writes it, so a table within the budget has exactly its layout;
    /// the rest is appended as version 1, in segments of about the budget each. When that
    /// append fails the table is deleted: the call leaves all the rows or none.
    pub async fn write_table_streaming<S>(
        &self,
        spec: &TableSpec,
        schema: SchemaRef,
        batches: S,
        segment_max_bytes: Option<u64>,
    ) -> Result<Manifest>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        let budget = match segment_max_bytes.or(spec.segment_max_bytes) {
            Some(b) => b,
            None => self.segment_budget()?,
        };
        let mut input = batches;
        let (mut carry, mut exhausted) = (None, false);
        let first = budgeted(&mut input, &mut carry, &mut exhausted, budget);
        let manifest = self.write_table(spec, schema.clone(), first).await?;
        let next = match carry.take() {
            Some(b) => Some(b),
            None if exhausted => None,
            None => next_rows(&mut input).await?,
        };
        let Some(next) = next else {
            return Ok(manifest);
        };
        let rest = futures::stream::iter([Ok(next)]).chain(input);
        if let Err(e) = self
            .append_table_with(&manifest.table, schema, rest, Some(budget))
            .await
        {
            return Err(match self.delete_table_files(&manifest.table).await {
                Ok(()) => e,
                Err(d) => JammiError::Corrupt {
                    kind: "result table",
                    table: manifest.table.clone(),
                    reason: format!(
                        "only its first rows were written ({e}), and removing them failed \
                         ({d}): delete the table"
                    ),
                },
            });
        }
        Ok(manifest)
    }

    /// Writes and commits the table (or segment) `name` as the siblings `s`: the lease,
    /// free names checked, every object recorded before it is visible, the manifest last.
    async fn write_at<S>(
        &self,
        s: &Siblings,
        name: &str,
        spec: &TableSpec,
        schema: SchemaRef,
        batches: S,
    ) -> Result<Manifest>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        spec.index.check()?;
        let ttl = self.ttl()?;
        let store = self.object_store().await?;
        let mut creates = vec![&s.parquet, &s.index, &s.rowmap, &s.manifest];
        if spec.vector_column.is_some() && spec.index.quantization != Quantization::F32 {
            creates.push(&s.vectors);
        }
        let mut txn = Txn::begin(store.clone(), s, &creates, LeaseState::Writing, ttl).await?;
        let request = spec.vector_column.as_ref().map(|c| IndexRequest {
            column: c.clone(),
            params: spec.index,
            key_column: spec.key_column.clone(),
        });
        let written = async {
            let streamed = write::stream_parquet(
                store.clone(),
                &mut txn,
                &s.parquet,
                schema.clone(),
                batches,
                request.as_ref(),
            )
            .await?;
            let info = CommitInfo {
                table: name.to_string(),
                kind: TableKind::ResultTable,
                source: Some(spec.source.clone()).filter(|s| !s.is_empty()),
                task: Some(spec.task.clone()).filter(|s| !s.is_empty()),
                model: Some(spec.model.clone()).filter(|s| !s.is_empty()),
                key_column: spec.key_column.clone(),
                rows: streamed.rows,
                schema: schema.clone(),
                segment_max_bytes: spec.segment_max_bytes,
                row_bytes: Some(streamed.row_bytes),
            };
            write::sidecars_and_manifest(
                &store,
                &mut txn,
                info,
                streamed.parquet,
                streamed.index,
                request.as_ref(),
            )
            .await
        }
        .await;
        match written {
            Ok(m) => txn.commit(m).await,
            Err(e) => {
                txn.abort().await;
                Err(e)
            }
        }
    }

    /// Appends rows to result table `name` as a new segment (its own Parquet file and
    /// index, under `<name>.jammi/segments/`), committed as the table's next version. The
    /// existing segments are neither read nor rewritten. Rows must have the table's columns
    /// (by name, with the same types); a mismatch is refused, naming the column, before
    /// anything is written. A writer that loses the race for the next version number
    /// commits the one after (appends commute): no row is lost or added twice.
    pub async fn append_table<S>(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: S,
    ) -> Result<versions::TableVersion>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        self.append_table_with(name, schema, batches, None).await
    }

    /// [`append_table`](Self::append_table) with this write's segment budget
    /// (`None`: the table's own, else the store's).
    pub async fn append_table_with<S>(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: S,
        segment_max_bytes: Option<u64>,
    ) -> Result<versions::TableVersion>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        let change = Change {
            segment_max_bytes,
            ..Change::new(versions::Operation::Append, Vec::new())
        };
        self.commit_change(name, None, change, Some((schema, batches)))
            .await
    }

    /// Deletes rows of result table `name`: `deleted` holds, per segment path of version
    /// `base`, the row positions to delete (beyond those already deleted). Each affected
    /// segment gets a new deletion file (the union with its old one); no data is rewritten.
    /// Returns the version committed (`base` when nothing matched).
    pub async fn delete_rows(
        &self,
        name: &str,
        base: &versions::TableVersion,
        deleted: Vec<(String, roaring::RoaringBitmap)>,
    ) -> Result<versions::TableVersion> {
        if deleted.iter().all(|(_, d)| d.is_empty()) {
            return Ok(base.clone());
        }
        let change = Change::new(versions::Operation::Delete, deleted);
        self.commit_change::<futures::stream::Empty<Result<RecordBatch>>>(
            name,
            Some(base),
            change,
            None,
        )
        .await
    }

    /// Commits one change of result table `name` as its next version: the rows `change`
    /// deletes from segments of `base` (the latest version when `None`) and, if given, new
    /// rows as a new segment (written first, its columns checked against the table's).
    ///
    /// Of writers racing for one version number one lands; the others re-read the latest
    /// version and commit on top of it when their changes commute: appends always; deletes
    /// while their segments remain; an update or merge only when no row it deleted was
    /// deleted by the other writer, and a merge only when no rows were added meanwhile
    /// (they could hold its keys). Otherwise [`JammiError::Conflict`], with nothing of this
    /// change visible.
    ///
    /// A change that added segments then merges a size tier they filled, when auto
    /// compaction is on ([`with_auto_compact`](Self::with_auto_compact)), as a version of
    /// its own. That merge is an optimisation: it failing (a racing delete of its
    /// segments, a storage error) is logged, never returned — this change has committed.
    pub async fn commit_change<S>(
        &self,
        name: &str,
        base: Option<&versions::TableVersion>,
        change: Change,
        appended: Option<(SchemaRef, S)>,
    ) -> Result<versions::TableVersion>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        let merges = appended.is_some()
            && change.replaced.is_empty()
            && self.auto_compacts(change.auto_compact)?;
        let manifest = self.manifest(name).await?;
        let budget = change.segment_max_bytes;
        let v = self
            .commit_version(name, &manifest, base, change, appended)
            .await?;
        if merges && v.segments.len() > 1 {
            match self.budget_of(budget, &manifest) {
                Ok(budget) => self.merge_filled_tiers(name, &manifest, &v, budget).await,
                Err(e) => tracing::warn!("{name}: small segments left unmerged: {e}"),
            }
        }
        Ok(v)
    }

    /// [`commit_change`](Self::commit_change) without the merge after it, on the table
    /// `manifest` describes.
    pub(crate) async fn commit_version<S>(
        &self,
        name: &str,
        manifest: &Manifest,
        base: Option<&versions::TableVersion>,
        change: Change,
        appended: Option<(SchemaRef, S)>,
    ) -> Result<versions::TableVersion>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        if let Some((schema, _)) = &appended {
            check_append_schema(name, &manifest.schema()?, schema)?;
        }
        let store = self.object_store().await?;
        let base = match base {
            Some(b) => b.clone(),
            None => versions::latest(&store, &self.root, name, || manifest.clone()).await?,
        };
        let added = match appended {
            None => Vec::new(),
            Some((schema, batches)) => {
                let budget = self.budget_of(change.segment_max_bytes, manifest)?;
                self.write_segments(name, manifest, &base, schema, batches, budget)
                    .await?
            }
        };
        let writer = lease::random_hex(8);
        let mut parent = base.clone();
        let mut failed = None;
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let (next, intent) = match self
                .next_version(&store, name, &base, &parent, &change, &added, &writer)
                .await
            {
                Ok(next) => next,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            // A failed commit may have landed (its response lost): nothing is discarded, and
            // its intent record stays for `vacuum` to settle.
            let committed = versions::commit(&store, &self.root, &next).await?;
            if let versions::Committed::Taken = committed {
                discard_deletions(&store, &self.root, &parent, &next).await;
            }
            if let Some(url) = intent {
                let removed = match url.object_path() {
                    Ok(p) => store.delete(&p).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = removed {
                    tracing::warn!("left {url} (vacuum settles it): {e}");
                }
            }
            match committed {
                versions::Committed::Yes => return Ok(next),
                versions::Committed::Taken => {
                    parent =
                        versions::latest(&store, &self.root, name, || manifest.clone()).await?;
                }
            }
        }
        // No attempt landed: the segments written for it are orphans this call proves.
        self.discard_segments(&store, name, &added).await;
        Err(failed.unwrap_or_else(|| {
            JammiError::Conflict(format!(
                "changing {name}: {MAX_COMMIT_ATTEMPTS} other writers committed first; try again"
            ))
        }))
    }

    /// Whether a version after `base` up to `parent` added rows. A compaction adds none
    /// (its segments are new, its rows are not), so the records are read, not the segments.
    async fn rows_added_between(
        &self,
        store: &Arc<dyn ObjectStore>,
        name: &str,
        base: &versions::TableVersion,
        parent: &versions::TableVersion,
    ) -> Result<bool> {
        for n in base.version + 1..=parent.version {
            let v = match n == parent.version {
                true => Some(parent.clone()),
                false => versions::read(store, &self.root, name, n).await?,
            };
            // A record vacuum removed meanwhile proves nothing: assume it added rows.
            match v {
                Some(v) if v.rows_added == 0 => {}
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Removes segments this process wrote for a change that committed no version
    /// (best effort: what stays is settled by `vacuum`).
    async fn discard_segments(
        &self,
        store: &Arc<dyn ObjectStore>,
        name: &str,
        added: &[versions::SegmentRef],
    ) {
        let Ok(ttl) = self.ttl() else { return };
        for seg in added {
            let id = naming::sidecar_stem(seg.path.rsplit('/').next().unwrap_or(&seg.path));
            let removed = match versions::segment_siblings(&self.root, name, id) {
                Ok(s) => delete_sidecars(store.clone(), &s, &seg.manifest, ttl).await,
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                tracing::warn!("left segment {} of an uncommitted change: {e}", seg.path);
            }
        }
    }

    /// Writes `batches` as new segments of `name`, each of at most about the segment
    /// budget, one after the other as the rows stream (a batch is cut where a budget ends).
    /// When the rows fail part-way (the query errs, a write fails), the segments already
    /// written are removed: no version will name them.
    async fn write_segments<S>(
        &self,
        name: &str,
        manifest: &Manifest,
        base: &versions::TableVersion,
        schema: SchemaRef,
        batches: S,
        budget: u64,
    ) -> Result<Vec<versions::SegmentRef>>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        let mut input = batches;
        let mut carry: Option<RecordBatch> = None;
        let mut out = Vec::new();
        let written: Result<()> = async {
            loop {
                // Only a first segment may be empty (a write of no rows): look ahead.
                if carry.is_none() && !out.is_empty() {
                    match next_rows(&mut input).await? {
                        None => return Ok(()),
                        Some(b) => carry = Some(b),
                    }
                }
                let mut exhausted = false;
                let segment = budgeted(&mut input, &mut carry, &mut exhausted, budget);
                let part = versions::TableVersion {
                    version: base.version + out.len() as u64,
                    ..base.clone()
                };
                let written = self
                    .write_segment(name, manifest, &part, schema.clone(), Box::pin(segment))
                    .await?;
                out.push(written);
                if exhausted && carry.is_none() {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = written {
            let store = self.object_store().await?;
            self.discard_segments(&store, name, &out).await;
            return Err(e);
        }
        Ok(out)
    }

    /// Writes `batches` as a new segment of `name` (index parameters as the table's).
    async fn write_segment<S>(
        &self,
        name: &str,
        manifest: &Manifest,
        base: &versions::TableVersion,
        schema: SchemaRef,
        batches: S,
    ) -> Result<versions::SegmentRef>
    where
        S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        let id = format!("{}-{}", base.version + 1, lease::random_hex(4));
        let s = versions::segment_siblings(&self.root, name, &id)?;
        let spec = TableSpec {
            name: Some(id.clone()),
            key_column: manifest.key_column.clone(),
            vector_column: manifest.index.as_ref().map(|i| i.column.clone()),
            index: manifest
                .index
                .as_ref()
                .map(IndexParams::from)
                .unwrap_or_default(),
            ..Default::default()
        };
        Ok(versions::SegmentRef {
            path: format!(
                "{}{id}{}",
                versions::segments_prefix(name),
                naming::PARQUET_SUFFIX
            ),
            manifest: self.write_at(&s, &id, &spec, schema, batches).await?,
            deleted: None,
        })
    }

    /// The version `change` makes on top of `parent` (which `base` may precede).
    #[allow(clippy::too_many_arguments)]
    async fn next_version(
        &self,
        store: &Arc<dyn ObjectStore>,
        name: &str,
        base: &versions::TableVersion,
        parent: &versions::TableVersion,
        change: &Change,
        added: &[versions::SegmentRef],
        writer: &str,
    ) -> Result<(versions::TableVersion, Option<StorageUrl>)> {
        use versions::Operation;
        let rebased = parent.version != base.version;
        let conflict = |why: String| {
            Err(JammiError::Conflict(format!(
                "{:?} of {name} against version {}: {why}; nothing was committed, run it again",
                change.operation, base.version
            )))
        };
        if rebased
            && change.operation == Operation::Merge
            && self.rows_added_between(store, name, base, parent).await?
        {
            return conflict("rows were added meanwhile, which could hold its keys".into());
        }
        let version = parent.version + 1;
        let mut segments = parent.segments.clone();
        if !change.replaced.is_empty() {
            // A compaction: its added segments take the place of those it rewrote.
            match replace_segments(segments, base, &change.replaced, added) {
                Ok(s) => segments = s,
                Err(why) => return conflict(why),
            }
        }
        let added = if change.replaced.is_empty() {
            added
        } else {
            &[]
        };
        // Every check first, then the writes: a conflict leaves no deletion file behind.
        let mut merged = Vec::new();
        let mut removed = 0;
        for (path, rows) in change.deleted.iter().filter(|(_, r)| !r.is_empty()) {
            let Some(at) = segments.iter().position(|s| &s.path == path) else {
                return conflict(format!("segment {path} was replaced meanwhile"));
            };
            let mut all = match &segments[at].deleted {
                Some(d) => versions::read_deletions(store, &self.root, d).await?,
                None => roaring::RoaringBitmap::new(),
            };
            if rebased && matches!(change.operation, Operation::Update | Operation::Merge) {
                let before = base.segments.iter().find(|s| &s.path == path);
                let theirs = match before.and_then(|s| s.deleted.as_ref()) {
                    Some(d) => &all - &versions::read_deletions(store, &self.root, d).await?,
                    None => all.clone(),
                };
                if !theirs.is_disjoint(rows) {
                    return conflict("rows it changes were changed by another writer".into());
                }
            }
            let before = all.len();
            all |= rows;
            removed += all.len() - before;
            merged.push((at, all));
        }
        // The deletion files are recorded (create-only) before they are written: if this
        // commit never lands, the record proves them jammi-db's to `vacuum`.
        let mut files = Vec::new();
        for (at, all) in merged {
            let path = &segments[at].path;
            let id = naming::sidecar_stem(path.rsplit('/').next().unwrap_or(path));
            files.push((
                at,
                versions::new_deletions(name, id, version, writer, &all)?,
            ));
        }
        let mut intent = None;
        if !files.is_empty() {
            let refs: Vec<&versions::DeletionRef> = files.iter().map(|(_, d)| &d.entry).collect();
            intent =
                Some(versions::put_intent(store, &self.root, name, version, writer, &refs).await?);
        }
        for (at, d) in files {
            segments[at].deleted = Some(versions::put_deletions(store, &self.root, d).await?);
        }
        segments.extend(added.iter().cloned());
        let next = versions::TableVersion {
            format_version: versions::VERSION_FORMAT,
            table: name.to_string(),
            version,
            created_ms: lease::now_ms(),
            writer: writer.to_string(),
            operation: change.operation,
            rows_added: match change.operation {
                Operation::Compact => 0,
                _ => added.iter().map(|s| s.manifest.rows).sum(),
            },
            rows_deleted: removed,
            segments,
        };
        Ok((next, intent))
    }

    /// The number of the latest version record of result table `name` (`None`: it never
    /// changed). One LIST page.
    pub async fn latest_version_number(&self, name: &str) -> Result<Option<u64>> {
        naming::validate_table_name(name)?;
        let store = self.object_store().await?;
        versions::latest_number(&store, &self.root, name).await
    }

    /// The record of version `n > 0` of result table `name`, with no other request (one
    /// GET): what a reader that holds version 0 needs to open a later version. `None` when
    /// there is no such record.
    pub async fn version_record(
        &self,
        name: &str,
        n: u64,
    ) -> Result<Option<versions::TableVersion>> {
        naming::validate_table_name(name)?;
        let store = self.object_store().await?;
        versions::read(&store, &self.root, name, n).await
    }

    /// Version `n` of result table `name` (`NotFound` when there is no such version).
    pub async fn version(&self, name: &str, n: u64) -> Result<versions::TableVersion> {
        let base = self.manifest(name).await?;
        if n == 0 {
            return Ok(versions::TableVersion::initial(name, base));
        }
        let store = self.object_store().await?;
        versions::read(&store, &self.root, name, n)
            .await?
            .ok_or_else(|| JammiError::NotFound {
                kind: "table version",
                name: format!("{name}@{n}"),
            })
    }

    /// Every version of result table `name`, oldest first (version 0 included).
    pub async fn versions(&self, name: &str) -> Result<Vec<versions::TableVersion>> {
        let base = self.manifest(name).await?;
        let store = self.object_store().await?;
        let mut all = vec![versions::TableVersion::initial(name, base)];
        all.extend(
            versions::all(&store, &self.root, name)
                .await?
                .into_iter()
                .map(|(_, v)| v),
        );
        Ok(all)
    }

    /// The latest version of result table `name` (version 0 when it never changed).
    pub async fn latest_version(&self, name: &str) -> Result<versions::TableVersion> {
        let base = self.manifest(name).await?;
        let store = self.object_store().await?;
        versions::latest(&store, &self.root, name, || base).await
    }

    /// Convenience: writes a table from batches held in memory.
    pub async fn write_batches(
        &self,
        spec: &TableSpec,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<Manifest> {
        self.write_table(
            spec,
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
        )
        .await
    }

    /// Names of committed tables (those with a manifest), sorted.
    pub async fn list_tables(&self) -> Result<Vec<String>> {
        let store = self.object_store().await?;
        let listed = store
            .list_with_delimiter(Some(&self.root.object_path()?))
            .await
            .map_err(|e| JammiError::storage(&self.root, e))?;
        let mut names: Vec<String> = listed
            .objects
            .iter()
            .filter_map(|m| m.location.filename())
            .filter_map(naming::table_of_manifest)
            .map(str::to_string)
            .collect();
        names.sort();
        self.catalog.set_tables(&names);
        Ok(names)
    }

    /// The manifest of a committed table, after checking every sibling exists with the
    /// recorded size. A missing or resized sibling is a [`JammiError::Corrupt`] error.
    pub async fn manifest(&self, name: &str) -> Result<Manifest> {
        naming::validate_table_name(name)?;
        let store = self.object_store().await?;
        read_manifest(&store, &Siblings::table(&self.root, name)?).await
    }

    /// The columns a table's manifest records, even when its siblings do not verify.
    pub(crate) async fn manifest_schema(&self, name: &str) -> Option<SchemaRef> {
        let store = self.object_store().await.ok()?;
        let s = Siblings::table(&self.root, name).ok()?;
        let m = txn::read_manifest_at(&store, &s.manifest, name)
            .await
            .ok()??;
        m.schema().ok()
    }

    /// Like [`manifest`](Self::manifest), then reads every sibling and checks its CRC32C.
    pub async fn verify(&self, name: &str) -> Result<Manifest> {
        let m = self.manifest(name).await?;
        let store = self.object_store().await?;
        for f in &m.files {
            let url = self.root.join(&f.name)?;
            let mut stream = store
                .get(&url.object_path()?)
                .await
                .map_err(|e| JammiError::storage(&url, e))?
                .into_stream();
            let mut crc = 0u32;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| JammiError::storage(&url, e))?;
                crc = crc32c::crc32c_append(crc, &chunk);
            }
            if crc != f.crc32c {
                return Err(JammiError::Corrupt {
                    kind: m.kind_name(),
                    table: name.to_string(),
                    reason: format!("{} does not match its manifest checksum", f.name),
                });
            }
        }
        Ok(m)
    }

    /// The loaded (cached) index of a committed table.
    pub async fn index(&self, manifest: &Manifest) -> Result<Arc<LoadedIndex>> {
        let store = self.object_store().await?;
        self.index_cache.get(&self.root, &store, manifest).await
    }

    /// Un-publishes a table (manifest first), then removes the siblings it proves jammi-db
    /// wrote: each must still be the object the manifest records (its ETag, or its size and
    /// CRC32C). The Parquet file of a table whose manifest does not say jammi-db wrote it (an
    /// indexed file, or format 1) is kept. A delete that stops half-way is finished by
    /// recovery. Idempotent: a missing table is not an error.
    pub async fn delete_table_files(&self, name: &str) -> Result<()> {
        naming::validate_table_name(name)?;
        let ttl = self.ttl()?;
        let store = self.object_store().await?;
        let s = Siblings::table(&self.root, name)?;
        let Some(m) = txn::read_manifest_at(&store, &s.manifest, name).await? else {
            self.forget(name);
            return Ok(());
        };
        // A manifest naming objects that are not this table's own removes nothing.
        m.check_names(&s)?;
        self.delete_versions(&store, name, ttl).await?;
        let removal = delete_sidecars(store, &s, &m, ttl).await?;
        for kept in &removal.kept {
            tracing::warn!("kept {kept}: it is not the object table {name} committed");
        }
        for f in m.files.iter().filter(|f| !m.owns(f)) {
            tracing::info!(
                "kept {}: the manifest does not record that jammi-db wrote it",
                f.name
            );
        }
        self.forget(name);
        Ok(())
    }

    /// Removes what later versions added, before version 0 itself: each segment a record
    /// names (through its own manifest, under the same proofs as any table's objects), each
    /// deletion file whose size and checksum match its record, then the records, latest
    /// first. A delete that stops half-way leaves a table that
    /// reads as damaged until the delete is run again.
    async fn delete_versions(
        &self,
        store: &Arc<dyn ObjectStore>,
        name: &str,
        ttl: Duration,
    ) -> Result<()> {
        let records = versions::all(store, &self.root, name).await?;
        let base = format!("{name}{}", naming::PARQUET_SUFFIX);
        let mut segments: Vec<&versions::SegmentRef> = records
            .iter()
            .flat_map(|(_, v)| v.segments.iter())
            .filter(|seg| seg.path != base)
            .collect();
        segments.sort_by(|a, b| a.path.cmp(&b.path));
        segments.dedup_by(|a, b| a.path == b.path);
        let own = versions::segments_prefix(name);
        for seg in segments {
            // The record's path names the segment; its manifest on storage proves it.
            let Some(id) = seg
                .path
                .strip_prefix(&own)
                .and_then(|f| f.strip_suffix(naming::PARQUET_SUFFIX))
            else {
                continue;
            };
            let s = versions::segment_siblings(&self.root, name, id)?;
            if let Some(m) = txn::read_manifest_at(store, &s.manifest, id).await? {
                let removal = delete_sidecars(store.clone(), &s, &m, ttl).await?;
                for kept in &removal.kept {
                    tracing::warn!("kept {kept}: it is not the object segment {id} committed");
                }
            }
        }
        // Commits that never landed: the deletion files their intents record.
        let named = maintain::used_files(name, &records);
        maintain::settle_intents(store, &self.root, name, &records, &named, i64::MAX, false)
            .await?;
        // Deletion files: each must still be the object its record describes.
        let dir = self
            .root
            .join(&format!("{}deletions/", versions::table_dir(name)))?;
        let mut deletions: Vec<&versions::DeletionRef> = records
            .iter()
            .flat_map(|(_, v)| v.segments.iter().filter_map(|s| s.deleted.as_ref()))
            .collect();
        deletions.sort_by(|a, b| a.path.cmp(&b.path));
        deletions.dedup_by(|a, b| a.path == b.path);
        for d in deletions {
            let Some(file) = d.path.rsplit('/').next() else {
                continue;
            };
            let obj = OwnedObject {
                name: file.to_string(),
                size: d.size,
                crc32c: d.crc32c,
                e_tag: None,
            };
            if txn::prove(store, &dir, &obj).await? == txn::Proof::Ours {
                delete_if_present(store, &dir.join(file)?).await?;
            }
        }
        for (url, _) in records.iter().rev() {
            delete_if_present(store, url).await?;
        }
        Ok(())
    }

    fn forget(&self, name: &str) {
        self.catalog.forget_table(name);
        self.index_cache.forget_table(name);
    }

    /// Removes what crashed or failed writes left behind. See [`recovery`].
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let store = self.object_store().await?;
        recovery::recover(&store, &self.root, self.ttl()?, false).await
    }

    /// Reports what [`recover`](Self::recover) would remove, removing nothing.
    pub async fn recover_dry_run(&self) -> Result<RecoveryReport> {
        let store = self.object_store().await?;
        recovery::recover(&store, &self.root, self.ttl()?, true).await
    }
}

/// Reads the manifest of `siblings` and checks every sibling it lists and owns exists with
/// the recorded size (HEAD requests, side by side). The user's file of sidecars is not
/// checked here: one that changed makes the sidecars stale, not the table damaged — what
/// [`identity::check`] tells searches (they go exact) and the indexing DDL (it rebuilds).
pub(crate) async fn read_manifest(
    store: &Arc<dyn ObjectStore>,
    siblings: &Siblings,
) -> Result<Manifest> {
    let Some(m) = txn::read_manifest_at(store, &siblings.manifest, &siblings.stem).await? else {
        return Err(JammiError::NotFound {
            kind: "result table",
            name: siblings.stem.clone(),
        });
    };
    m.check_names(siblings)?;
    let kind = m.kind_name();
    let checks: Vec<_> = m
        .files
        .iter()
        .filter(|f| m.owns(f))
        .cloned()
        .map(|f| {
            let store = store.clone();
            let dir = siblings.dir.clone();
            let table = siblings.stem.clone();
            async move {
                let url = dir.join(&f.name)?;
                let reason = match store.head(&url.object_path()?).await {
                    Ok(meta) if meta.size == f.size => return Ok(()),
                    Ok(meta) => format!(
                        "{} is {} bytes, the manifest says {}",
                        f.name, meta.size, f.size
                    ),
                    Err(object_store::Error::NotFound { .. }) => format!("{} is missing", f.name),
                    Err(e) => return Err(JammiError::storage(&url, e)),
                };
                Err(JammiError::Corrupt {
                    kind,
                    table,
                    reason,
                })
            }
        })
        .collect();
    futures::future::try_join_all(checks).await?;
    Ok(m)
}

/// Removes a committed table's manifest, then the objects it records that jammi-db wrote and
/// that are still the recorded ones, under a `deleting` lease (finished by recovery if the
/// process dies half-way). The indexed file of sidecars is never touched.
pub(crate) async fn delete_sidecars(
    store: Arc<dyn ObjectStore>,
    siblings: &Siblings,
    manifest: &Manifest,
    ttl: Duration,
) -> Result<txn::Removal> {
    manifest.check_names(siblings)?;
    let mut txn = Txn::begin(store.clone(), siblings, &[], LeaseState::Deleting, ttl).await?;
    // Under the lease, the manifest must still be the one the caller decided on.
    match txn::read_manifest_at(&store, &siblings.manifest, &siblings.stem).await {
        Ok(Some(current)) if txn::same_commit(&current, manifest) => {}
        Ok(_) | Err(JammiError::Corrupt { .. }) => {
            txn.finish_unchanged().await;
            return Ok(txn::Removal::default());
        }
        Err(e) => {
            txn.finish_unchanged().await;
            return Err(e);
        }
    }
    let owned: Vec<OwnedObject> = manifest
        .files
        .iter()
        .filter(|f| manifest.owns(f))
        .map(OwnedObject::from)
        .collect();
    if let Err(e) = txn.plan_delete(manifest, owned).await {
        txn.abort().await;
        return Err(e);
    }
    txn.finish_delete().await
}

/// The committed sidecars of the Parquet file `parquet`: under the current naming, else
/// under the older one (cut at the first dot) when their manifest records this very file.
/// Whether they still fit the file is [`identity::check`]'s question. The older name is
/// shared by every file of that prefix (`emb.2024.parquet`, `emb.2025.parquet`): what is
/// there, damaged or another file's, is not this file's and is passed over.
pub(crate) async fn find_sidecars(
    store: &Arc<dyn ObjectStore>,
    parquet: &StorageUrl,
) -> Result<Option<Manifest>> {
    let this_file = |m: &Manifest| {
        m.file(FileRole::Parquet)
            .is_some_and(|f| f.name == parquet.file_name())
    };
    match read_manifest(store, &Siblings::of_file(parquet)?).await {
        Ok(m) if this_file(&m) => return Ok(Some(m)),
        Ok(_) | Err(JammiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    if let Some(legacy) = Siblings::legacy_of_file(parquet)?
        && let Ok(m) = read_manifest(store, &legacy).await
        && this_file(&m)
    {
        return Ok(Some(m));
    }
    Ok(None)
}

/// Options of indexing an existing Parquet file.
pub(crate) struct IndexFileRequest<'a> {
    pub column: &'a str,
    pub params: IndexParams,
    pub key_column: Option<&'a str>,
    pub progress: Option<&'a dyn crate::index::progress::BuildProgress>,
    pub ttl: Duration,
}

/// Builds sidecars for an existing Parquet file (the `jammi.vector_column` SQL path) under
/// the file's lease: reads the vector column, builds the index, then commits index, rowmap
/// and manifest next to the file. The manifest records the file's size, CRC32C and store
/// version, so a later change to the file is detected. The file itself is only read.
pub(crate) async fn index_existing(
    store: Arc<dyn ObjectStore>,
    parquet: &StorageUrl,
    req: IndexFileRequest<'_>,
) -> Result<Manifest> {
    let s = Siblings::of_file(parquet)?;
    let mut creates = vec![&s.index, &s.rowmap, &s.manifest];
    if req.params.quantization != Quantization::F32 {
        creates.push(&s.vectors);
    }
    let mut txn = Txn::begin(store.clone(), &s, &creates, LeaseState::Writing, req.ttl).await?;
    match build_for_file(&store, &mut txn, parquet, &req).await {
        Ok(m) => txn.commit(m).await,
        Err(e) => {
            txn.abort().await;
            Err(e)
        }
    }
}

async fn build_for_file(
    store: &Arc<dyn ObjectStore>,
    txn: &mut Txn,
    parquet: &StorageUrl,
    req: &IndexFileRequest<'_>,
) -> Result<Manifest> {
    let before = store
        .head(&parquet.object_path()?)
        .await
        .map_err(|e| JammiError::storage(parquet, e))?;
    let read::VectorScan {
        file_schema,
        field,
        key_field,
        rows,
        mut batches,
    } = read::vector_batches(store, parquet, req.column, req.key_column).await?;
    if let Some(p) = req.progress {
        p.start(&parquet.file_name(), rows);
    }
    let request = IndexRequest {
        column: req.column.to_string(),
        params: req.params,
        key_column: req.key_column.map(str::to_string),
    };
    let dims = crate::index::vectors::check_vector_type(req.column, field.data_type())?;
    let mut builder = crate::index::build::IndexBuilder::new(req.column, req.params, dims);
    if let Some(k) = &key_field {
        builder = builder.with_keys(k)?;
    }
    builder.reserve(rows as usize)?;
    // The next batch is read and decoded while the current one is added; the file's
    // checksum (for the manifest) is computed meanwhile.
    let build = async {
        let mut next = batches.next().await;
        while let Some(batch) = next {
            let (vectors, keys) = batch?;
            let n = vectors.len() as u64;
            let (added, following) =
                tokio::join!(builder.add_batch_blocking(vectors, keys), batches.next());
            builder = added?;
            next = following;
            if let Some(p) = req.progress {
                p.advance(n);
            }
        }
        builder.finish_blocking().await
    };
    let (finished, checksum) = tokio::join!(build, read::object_crc(store, parquet));
    let Some(built) = write::BuiltIndex::from_finished(finished?) else {
        return Err(JammiError::InvalidInput(format!(
            "column '{}' of {parquet} has no non-NULL vectors to index",
            req.column
        )));
    };
    let (size, crc32c) = checksum?;
    let after = store
        .head(&parquet.object_path()?)
        .await
        .map_err(|e| JammiError::storage(parquet, e))?;
    if after.size != before.size || after.e_tag != before.e_tag || size != after.size {
        return Err(JammiError::InvalidInput(format!(
            "{parquet} changed while it was being indexed; run the statement again"
        )));
    }
    let parquet_entry = FileEntry {
        role: FileRole::Parquet,
        name: parquet.file_name(),
        size,
        crc32c,
        e_tag: after.e_tag,
        version: after.version,
    };
    let info = CommitInfo {
        table: txn.siblings().stem.clone(),
        kind: TableKind::IndexedFile,
        source: None,
        task: None,
        model: None,
        key_column: req.key_column.map(str::to_string),
        rows,
        schema: file_schema,
        segment_max_bytes: None,
        row_bytes: None,
    };
    write::sidecars_and_manifest(store, txn, info, parquet_entry, Some(built), Some(&request)).await
}

/// The next batch of `input` holding rows, `None` at its end.
async fn next_rows<S>(input: &mut S) -> Result<Option<RecordBatch>>
where
    S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
{
    while let Some(b) = input.next().await {
        let b = b?;
        if b.num_rows() > 0 {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// The batches of `input` (after `carry`, a cut batch's rest) until about `budget` bytes of
/// rows have passed: a batch that would cross it is cut, its rest left in `carry`.
/// `exhausted` is set when `input` ends.
fn budgeted<'a, S>(
    input: &'a mut S,
    carry: &'a mut Option<RecordBatch>,
    exhausted: &'a mut bool,
    budget: u64,
) -> impl Stream<Item = Result<RecordBatch>> + Send + 'a
where
    S: Stream<Item = Result<RecordBatch>> + Send + Unpin,
{
    let mut used = 0u64;
    futures::stream::poll_fn(move |cx| {
        use std::task::Poll;
        loop {
            let batch = match carry.take() {
                Some(b) => b,
                None => match std::pin::Pin::new(&mut *input).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        *exhausted = true;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Some(Ok(b))) => b,
                },
            };
            if batch.num_rows() == 0 {
                continue;
            }
            if used >= budget {
                *carry = Some(batch);
                return Poll::Ready(None);
            }
            let size = batch.get_array_memory_size().max(1) as u64;
            let per_row = size.div_ceil(batch.num_rows() as u64).max(1);
            let fits = ((budget - used).div_ceil(per_row) as usize).max(1);
            if fits >= batch.num_rows() {
                used += size;
                return Poll::Ready(Some(Ok(batch)));
            }
            used = budget;
            *carry = Some(batch.slice(fits, batch.num_rows() - fits));
            return Poll::Ready(Some(Ok(batch.slice(0, fits))));
        }
    })
}
