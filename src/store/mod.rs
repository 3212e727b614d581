//! `ResultStore`: result tables (Parquet + USearch sidecars) under a root on any backend,
//! with a crash-safe commit, delete and recovery (DESIGN §4).

pub mod lease;
pub mod manifest;
pub mod naming;
pub mod read;
pub mod recovery;
pub(crate) mod write;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::catalog::Catalog;
use crate::error::{JammiError, Result};
use crate::index::IndexParams;
use crate::index::cache::{IndexCache, LoadedIndex};
use crate::storage::{StorageRegistry, StorageUrl};
pub use manifest::{FileEntry, FileRole, IndexInfo, Manifest};
pub use recovery::RecoveryReport;
pub use write::writer_properties;
use write::{CommitInfo, IndexRequest, Siblings};

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
}

/// Result tables under one root URL.
pub struct ResultStore {
    root: StorageUrl,
    registry: StorageRegistry,
    catalog: Arc<Catalog>,
    store: std::sync::OnceLock<Arc<dyn ObjectStore>>,
    index_cache: Arc<IndexCache>,
}

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
            index_cache: Arc::new(IndexCache::with_defaults()?),
        })
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
        Ok(Siblings::new(&self.root, name)?.parquet)
    }

    /// Writes a result table from a stream of batches and commits it. Returns its manifest.
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
        let store = self.object_store().await?;
        let siblings = Siblings::new(&self.root, &name)?;
        if store.head(&siblings.manifest.object_path()?).await.is_ok() {
            return Err(JammiError::AlreadyExists {
                kind: "result table",
                name,
            });
        }
        let lease = lease::LeaseGuard::acquire(store.clone(), &self.root, &name).await?;
        let request = spec.vector_column.as_ref().map(|c| IndexRequest {
            column: c.clone(),
            params: spec.index,
            key_column: spec.key_column.clone(),
        });
        let result = async {
            let streamed = write::stream_parquet(
                store.clone(),
                &siblings.parquet,
                schema.clone(),
                batches,
                request.as_ref(),
            )
            .await?;
            let info = CommitInfo {
                table: name.clone(),
                source: Some(spec.source.clone()).filter(|s| !s.is_empty()),
                task: Some(spec.task.clone()).filter(|s| !s.is_empty()),
                model: Some(spec.model.clone()).filter(|s| !s.is_empty()),
                key_column: spec.key_column.clone(),
                rows: streamed.rows,
                schema: schema.clone(),
            };
            write::commit(
                &store,
                &siblings,
                info,
                streamed.parquet,
                streamed.index,
                request.as_ref(),
                lease.check_held(),
            )
            .await
        }
        .await;
        match result {
            Ok(m) => {
                if let Err(e) = lease.release().await {
                    tracing::warn!("table {name} committed but its lease was not removed: {e}");
                }
                self.catalog.note_table(&name);
                Ok(m)
            }
            Err(e) => {
                write::remove_data_siblings(&store, &siblings).await;
                let _ = lease.release().await;
                Err(e)
            }
        }
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
            .filter_map(naming::split_sibling)
            .filter(|(_, s)| *s == naming::MANIFEST_SUFFIX)
            .map(|(n, _)| n.to_string())
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
        read_manifest(&store, &self.root, name).await
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

    /// Un-publishes a table (manifest first), then removes its siblings. Idempotent: a
    /// missing table or missing siblings are not errors.
    pub async fn delete_table_files(&self, name: &str) -> Result<()> {
        naming::validate_table_name(name)?;
        let store = self.object_store().await?;
        let siblings = Siblings::new(&self.root, name)?;
        for url in std::iter::once(&siblings.manifest).chain(siblings.data()) {
            match store.delete(&url.object_path()?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(JammiError::storage(url, e)),
            }
        }
        self.catalog.forget_table(name);
        self.index_cache.clear();
        Ok(())
    }

    /// Removes what crashed or failed writes left behind. See [`recovery`].
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let store = self.object_store().await?;
        recovery::recover(&store, &self.root, false).await
    }

    /// Reports what [`recover`](Self::recover) would remove, removing nothing.
    pub async fn recover_dry_run(&self) -> Result<RecoveryReport> {
        let store = self.object_store().await?;
        recovery::recover(&store, &self.root, true).await
    }
}

/// Reads `<dir>/<name>.idx.manifest.json` and checks sibling sizes with HEAD requests.
pub(crate) async fn read_manifest(
    store: &Arc<dyn ObjectStore>,
    dir: &StorageUrl,
    name: &str,
) -> Result<Manifest> {
    let siblings = Siblings::new(dir, name)?;
    let bytes = match store.get(&siblings.manifest.object_path()?).await {
        Ok(r) => r
            .bytes()
            .await
            .map_err(|e| JammiError::storage(&siblings.manifest, e))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(JammiError::NotFound {
                kind: "result table",
                name: name.to_string(),
            });
        }
        Err(e) => return Err(JammiError::storage(&siblings.manifest, e)),
    };
    let m = Manifest::from_json(name, &bytes)?;
    let checks: Vec<_> = m
        .files
        .iter()
        .cloned()
        .map(|f| {
            let store = store.clone();
            let dir = dir.as_prefix();
            let table = name.to_string();
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
                Err(JammiError::Corrupt { table, reason })
            }
        })
        .collect();
    futures::future::try_join_all(checks).await?;
    Ok(m)
}

/// Builds sidecars for an existing Parquet file (the `jammi.vector_column` SQL path): reads
/// the vector column, builds the index, then commits index, rowmap and manifest next to the
/// file. The Parquet file itself is only read (and checksummed), never rewritten.
pub(crate) async fn index_existing(
    store: Arc<dyn ObjectStore>,
    parquet: &StorageUrl,
    column: &str,
    params: IndexParams,
    key_column: Option<&str>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Manifest> {
    let name = parquet.file_stem();
    let dir = parquet.parent();
    let siblings = Siblings {
        parquet: parquet.clone(),
        ..Siblings::new(&dir, &name)?
    };
    let read::VectorScan {
        file_schema,
        field,
        key_field,
        rows,
        mut batches,
    } = read::vector_batches(&store, parquet, column, key_column).await?;
    if let Some(pb) = progress {
        pb.set_length(rows);
    }
    let request = IndexRequest {
        column: column.to_string(),
        params,
        key_column: key_column.map(str::to_string),
    };
    let dims = crate::index::vectors::check_vector_type(column, field.data_type())?;
    let mut builder = crate::index::build::IndexBuilder::new(column, params, dims);
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
            if let Some(pb) = progress {
                pb.inc(n);
            }
        }
        builder.finish_blocking().await
    };
    let (finished, checksum) = tokio::join!(build, read::object_crc(&store, parquet));
    let Some(built) = write::BuiltIndex::from_finished(finished?) else {
        return Err(JammiError::InvalidInput(format!(
            "column '{column}' of {parquet} has no non-NULL vectors to index"
        )));
    };
    let (size, crc32c) = checksum?;
    let parquet_entry = FileEntry {
        role: FileRole::Parquet,
        name: String::new(),
        size,
        crc32c,
    };
    let info = CommitInfo {
        table: name,
        source: None,
        task: None,
        model: None,
        key_column: key_column.map(str::to_string),
        rows,
        schema: file_schema,
    };
    let result = write::commit(
        &store,
        &siblings,
        info,
        parquet_entry,
        Some(built),
        Some(&request),
        async { Ok(()) },
    )
    .await;
    if result.is_err() {
        for url in [&siblings.index, &siblings.rowmap] {
            if let Ok(p) = url.object_path() {
                let _ = store.delete(&p).await;
            }
        }
    }
    result
}
