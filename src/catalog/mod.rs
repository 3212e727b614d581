//! The catalog: source definitions and the list of result tables, persisted as documents
//! under the root (`<root>/_jammi/sources/<name>.json`), so it needs no server, survives
//! restarts and is shared by every process on the root.
//!
//! Each source is its own object, created with create-only semantics: two writers adding
//! different sources never lose one another's entry, and two adding the same name get one
//! winner and one "already exists". Secrets are never written: connections are stored
//! with their cloud configuration stripped of secrets, and flagged when that happened.

pub(crate) mod append;
pub(crate) mod dml;
pub mod live;
pub(crate) mod merge;
pub mod provider;
pub mod table;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};
use crate::source::{SourceConnection, SourceType};
use crate::storage::{CloudConfig, StorageRegistry, StorageUrl};

pub use provider::{JammiCatalogProvider, SourceCatalogProvider};
pub use table::{IndexedTable, UnavailableTable};

/// A persisted source definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Source name (the SQL catalog name).
    pub name: String,
    /// Source type.
    pub source_type: SourceType,
    /// Name of its one table (`<source>.public.<table>`).
    pub table: String,
    /// Connection without secrets.
    pub connection: SourceConnection,
    /// `true` when the connection was registered with secrets that were not persisted.
    pub credentials_withheld: bool,
    /// Registration time, RFC 3339.
    pub created_at: String,
    /// Arrow schema of the table when it was registered (IPC, hex), so the source lists its
    /// columns even while its files cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_ipc: Option<String>,
}

impl SourceEntry {
    /// The schema recorded at registration, if any.
    pub fn schema(&self) -> Option<datafusion::arrow::datatypes::SchemaRef> {
        let hex = self.schema_ipc.as_deref()?;
        crate::format::manifest::decode_schema(hex).ok()
    }
}

/// Source definitions and result-table names of one root.
pub struct Catalog {
    root: StorageUrl,
    registry: StorageRegistry,
    cloud: Option<CloudConfig>,
    store: std::sync::OnceLock<Arc<dyn ObjectStore>>,
    tables: RwLock<BTreeSet<String>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("root", &self.root.to_string())
            .field("cloud", &self.cloud)
            .finish()
    }
}

/// Checks a source name is a plain SQL identifier (DataFusion lower-cases unquoted names).
pub fn validate_source_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(JammiError::InvalidInput(format!(
            "invalid source name '{name}': use lower-case letters, digits and '_', starting with a letter or '_'"
        )))
    }
}

impl Catalog {
    /// A catalog under `root`; `cloud` is the root's cloud configuration (`None`: ambient).
    pub fn new(
        root: StorageUrl,
        registry: StorageRegistry,
        cloud: Option<CloudConfig>,
    ) -> Arc<Self> {
        Arc::new(Catalog {
            root: root.as_prefix(),
            registry,
            cloud,
            store: std::sync::OnceLock::new(),
            tables: RwLock::default(),
        })
    }

    /// The root prefix.
    pub fn root(&self) -> &StorageUrl {
        &self.root
    }

    /// The root's cloud configuration.
    pub fn cloud(&self) -> Option<&CloudConfig> {
        self.cloud.as_ref()
    }

    async fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        // A plain check-then-set (not `get_or_try_init` with a closure) keeps this future
        // `Send` for every caller; a race builds the store twice and keeps the first.
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let built = self.registry.store(&self.root, self.cloud.as_ref()).await?;
        Ok(self.store.get_or_init(|| built).clone())
    }

    fn source_url(&self, name: &str) -> Result<StorageUrl> {
        validate_source_name(name)?;
        self.root.join(&format!("_jammi/sources/{name}.json"))
    }

    /// Persists a new source (create-only; an existing name is `AlreadyExists`). Secrets in
    /// the connection are dropped and `credentials_withheld` set accordingly.
    pub async fn put_source(
        &self,
        name: &str,
        source_type: SourceType,
        table: &str,
        connection: &SourceConnection,
        schema: Option<&datafusion::arrow::datatypes::Schema>,
    ) -> Result<SourceEntry> {
        let url = self.source_url(name)?;
        let withheld = connection.cloud.as_ref().is_some_and(|c| c.has_secrets());
        let mut stored = connection.clone();
        stored.cloud = connection.cloud.as_ref().map(|c| c.without_secrets());
        let entry = SourceEntry {
            name: name.to_string(),
            source_type,
            table: table.to_string(),
            connection: stored,
            credentials_withheld: withheld,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            schema_ipc: schema.map(crate::format::manifest::encode_schema),
        };
        let body = serde_json::to_vec_pretty(&entry).expect("entry serialises");
        self.store()
            .await?
            .put_opts(
                &url.object_path()?,
                PutPayload::from(body),
                PutMode::Create.into(),
            )
            .await
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { .. } => JammiError::AlreadyExists {
                    kind: "source",
                    name: name.to_string(),
                },
                e => JammiError::storage(&url, e),
            })?;
        Ok(entry)
    }

    /// Removes a source definition; `false` if there was none.
    pub async fn remove_source(&self, name: &str) -> Result<bool> {
        let url = self.source_url(name)?;
        let store = self.store().await?;
        let path = url.object_path()?;
        match store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(JammiError::storage(&url, e)),
            Ok(_) => {}
        }
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(JammiError::storage(&url, e)),
        }
    }

    /// One source definition.
    pub async fn source(&self, name: &str) -> Result<Option<SourceEntry>> {
        let url = self.source_url(name)?;
        match self.store().await?.get(&url.object_path()?).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| JammiError::storage(&url, e))?;
                Ok(Some(parse_entry(&url, &bytes)?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(JammiError::storage(&url, e)),
        }
    }

    /// Every source definition, sorted by name. A document that cannot be read or parsed
    /// is reported (a warning naming it) and skipped: one bad entry never hides the others.
    pub async fn sources(&self) -> Result<Vec<SourceEntry>> {
        let dir = self.root.join("_jammi/sources/")?;
        let store = self.store().await?;
        let metas: Vec<_> = store
            .list(Some(&dir.object_path()?))
            .try_collect()
            .await
            .map_err(|e| JammiError::storage(&dir, e))?;
        let mut out = Vec::new();
        for m in metas {
            let url = dir.join(m.location.filename().unwrap_or_default())?;
            let read = match store.get(&m.location).await {
                Ok(r) => r.bytes().await.map_err(|e| JammiError::storage(&url, e)),
                Err(object_store::Error::NotFound { .. }) => continue, // removed meanwhile
                Err(e) => Err(JammiError::storage(&url, e)),
            };
            match read.and_then(|bytes| parse_entry(&url, &bytes)) {
                Ok(entry) => out.push(entry),
                Err(e) => tracing::warn!("skipping source document: {e}"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Result-table names known to this process (refreshed by `ResultStore::list_tables`).
    pub fn table_names(&self) -> Vec<String> {
        self.tables.read().expect("lock").iter().cloned().collect()
    }

    pub(crate) fn note_table(&self, name: &str) {
        self.tables.write().expect("lock").insert(name.to_string());
    }

    pub(crate) fn forget_table(&self, name: &str) {
        self.tables.write().expect("lock").remove(name);
    }

    pub(crate) fn set_tables(&self, names: &[String]) {
        *self.tables.write().expect("lock") = names.iter().cloned().collect();
    }
}

fn parse_entry(url: &StorageUrl, bytes: &[u8]) -> Result<SourceEntry> {
    serde_json::from_slice(bytes).map_err(|e| JammiError::Document {
        what: url.to_string(),
        reason: e.to_string(),
    })
}
