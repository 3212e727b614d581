//! `StorageRegistry`: builds object stores lazily per URL and configuration, caches them,
//! and serves them to DataFusion as its `ObjectStoreRegistry`.
//!
//! Two caches with two keys:
//! - built stores are keyed by scheme, bucket, account, endpoint and a keyed fingerprint of
//!   the whole configuration, so the same bucket name on AWS and on a local S3 server, or two
//!   containers of one account, never share a client;
//! - DataFusion resolves stores by `scheme://bucket/` only, so each registry also keeps one
//!   *binding* per such URL: the store that SQL on that bucket uses (last registration wins,
//!   as in datafusion-cli).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;
use object_store::ObjectStore;
use url::Url;

use crate::error::{JammiError, Result};
use crate::storage::config::CloudConfig;
use crate::storage::hiding::{Hiding, ListingFilter};
use crate::storage::metrics::{CountingStore, RequestCounts, RequestSnapshot};
use crate::storage::url::{Scheme, StorageUrl};

/// Wraps every store the registry builds (request counting, fault injection, tracing).
pub type StoreLayer = Arc<dyn Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync>;

/// A store and the view SQL gets of it.
type View = (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>);

/// Identity of a built store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StoreKey {
    scheme: Scheme,
    bucket: String,
    account: Option<String>,
    endpoint: Option<String>,
    fingerprint: u64,
}

/// How long a provisional store (S3 without credentials, so unsigned) is used before the
/// credential chain is asked again.
const REPROBE_AFTER: Duration = Duration::from_secs(30);

/// A built store; `reprobe_at` is set when it rests on a decision to check again.
struct Entry {
    store: Arc<dyn ObjectStore>,
    reprobe_at: Option<Instant>,
}

struct Inner {
    stores: Mutex<HashMap<StoreKey, Entry>>,
    bindings: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    runtimes: Mutex<Vec<Weak<RuntimeEnv>>>,
    /// The scheduler address of the cluster the queries run on: credentials given here
    /// cannot reach its processes, so settings with secrets are refused.
    cluster: RwLock<Option<String>>,
    hasher: RandomState,
    layer: Option<StoreLayer>,
    counts: Arc<RequestCounts>,
    hide: RwLock<Option<Arc<dyn ListingFilter>>>,
    /// The SQL view of each store (by the store's address), kept so SQL gets one view per
    /// store and a view registered back into this registry binds the store it wraps.
    views: Mutex<HashMap<usize, View>>,
}

/// Builds, caches and hands out object stores for storage URLs. Cheap to clone (shared).
#[derive(Clone)]
pub struct StorageRegistry {
    inner: Arc<Inner>,
}

impl Default for StorageRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StorageRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound: Vec<String> = self
            .inner
            .bindings
            .read()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        f.debug_struct("StorageRegistry")
            .field("bound", &bound)
            .field("stores", &self.inner.stores.lock().expect("lock").len())
            .finish()
    }
}

impl StorageRegistry {
    /// An empty registry. `file://` and `memory://` need no configuration.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A registry that passes every store it builds through `layer` (e.g. a request
    /// counter or a fault injector).
    pub fn with_layer(layer: StoreLayer) -> Self {
        Self::build(Some(layer))
    }

    fn build(layer: Option<StoreLayer>) -> Self {
        StorageRegistry {
            inner: Arc::new(Inner {
                stores: Mutex::new(HashMap::new()),
                bindings: RwLock::new(HashMap::new()),
                runtimes: Mutex::new(Vec::new()),
                cluster: RwLock::new(None),
                hasher: RandomState::new(),
                layer,
                counts: Arc::default(),
                hide: RwLock::new(None),
                views: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store for `url` with `cloud` settings (`None`: ambient credentials), built on
    /// first use. Also binds it as the store DataFusion uses for `url`'s bucket.
    pub async fn store(
        &self,
        url: &StorageUrl,
        cloud: Option<&CloudConfig>,
    ) -> Result<Arc<dyn ObjectStore>> {
        let store = self.resolve(url, cloud).await?;
        self.bind(url, store.clone());
        Ok(store)
    }

    /// Like [`store`](Self::store) but without changing the bucket's SQL binding.
    pub async fn resolve(
        &self,
        url: &StorageUrl,
        cloud: Option<&CloudConfig>,
    ) -> Result<Arc<dyn ObjectStore>> {
        url.check_enabled()?;
        if let Some(c) = cloud {
            if c.scheme() != url.scheme() {
                return Err(JammiError::Config(format!(
                    "a {:?} configuration was given for {url}",
                    c.scheme()
                )));
            }
            c.validate()?;
            if c.has_secrets()
                && let Some(cluster) = self.inner.cluster.read().expect("lock").clone()
            {
                return Err(JammiError::Cluster {
                    url: cluster,
                    reason: format!(
                        "{url} was given credentials, which never leave this process: the \
                         cluster's scheduler and executors read it with their own ambient \
                         credentials (environment, profile or instance identity); give \
                         them those, and this session none"
                    ),
                });
            }
        }
        let key = self.key(url, cloud);
        if let Some(e) = self.inner.stores.lock().expect("lock").get(&key)
            && e.reprobe_at.is_none_or(|t| Instant::now() < t)
        {
            return Ok(e.store.clone());
        }
        let built = crate::storage::backends::build(url, cloud).await?;
        let entry = Entry {
            store: self.wrap(built.store),
            reprobe_at: built.provisional.then(|| Instant::now() + REPROBE_AFTER),
        };
        let mut stores = self.inner.stores.lock().expect("lock");
        let e = stores.entry(key).or_insert_with(|| Entry {
            store: entry.store.clone(),
            reprobe_at: entry.reprobe_at,
        });
        if e.reprobe_at.is_some_and(|t| Instant::now() >= t) {
            *e = entry;
        }
        Ok(e.store.clone())
    }

    /// Refuses settings with secrets from now on: queries run on the cluster at `url`.
    pub(crate) fn refuse_credentials_for_cluster(&self, url: &str) {
        *self.inner.cluster.write().expect("lock") = Some(url.to_string());
    }

    /// The store SQL uses for `url`'s bucket, if one is bound.
    pub fn bound(&self, url: &StorageUrl) -> Option<Arc<dyn ObjectStore>> {
        let k = url.object_store_url().as_str().to_string();
        self.inner.bindings.read().expect("lock").get(&k).cloned()
    }

    /// Makes `store` the one SQL uses for `url`'s bucket, in this registry and in every
    /// `SessionContext` it was installed into.
    pub fn bind(&self, url: &StorageUrl, store: Arc<dyn ObjectStore>) {
        let base = url.object_store_url();
        let key = base.as_str().to_string();
        {
            let mut b = self.inner.bindings.write().expect("lock");
            if let Some(old) = b.get(&key)
                && Arc::ptr_eq(old, &store)
            {
                return;
            }
            b.insert(key, store.clone());
        }
        // Collect first: a runtime may use this registry itself and call back into `bind`.
        let runtimes: Vec<Arc<RuntimeEnv>> = {
            let mut r = self.inner.runtimes.lock().expect("lock");
            r.retain(|w| w.strong_count() > 0);
            r.iter().filter_map(Weak::upgrade).collect()
        };
        for rt in runtimes {
            rt.register_object_store(base.as_ref(), self.sql_view(store.clone()));
        }
    }

    /// Registers this registry's stores into an existing `SessionContext` now and whenever
    /// a new bucket is bound later. (A context built by `JammiSession` uses the registry
    /// directly as its `ObjectStoreRegistry` instead.)
    pub fn install(&self, ctx: &SessionContext) {
        let rt = ctx.runtime_env();
        let bound: Vec<(String, Arc<dyn ObjectStore>)> = self
            .inner
            .bindings
            .read()
            .expect("lock")
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (k, s) in bound {
            let url = Url::parse(&k).expect("binding keys are URLs");
            rt.register_object_store(&url, self.sql_view(s));
        }
        if let Some(mem) = self.memory_default() {
            rt.register_object_store(&Url::parse("memory:///").expect("url"), self.sql_view(mem));
        }
        self.inner
            .runtimes
            .lock()
            .expect("lock")
            .push(Arc::downgrade(&rt));
    }

    fn memory_default(&self) -> Option<Arc<dyn ObjectStore>> {
        let url = StorageUrl::parse("memory:///").ok()?;
        self.sync_store(&url).ok()
    }

    /// Builds (or reuses) the ambient store for `url` without awaiting: used by DataFusion's
    /// synchronous lookups for buckets nothing has bound yet.
    fn sync_store(&self, url: &StorageUrl) -> Result<Arc<dyn ObjectStore>> {
        if let Some(s) = self.bound(url) {
            return Ok(s);
        }
        url.check_enabled()?;
        let key = self.key(url, None);
        if let Some(e) = self.inner.stores.lock().expect("lock").get(&key) {
            return Ok(e.store.clone());
        }
        let built = self.wrap(crate::storage::backends::build_sync(url, None)?);
        let store = self
            .inner
            .stores
            .lock()
            .expect("lock")
            .entry(key)
            .or_insert(Entry {
                store: built,
                reprobe_at: None,
            })
            .store
            .clone();
        self.bind(url, store.clone());
        Ok(store)
    }

    /// Applies the user layer, then distinct times per version (so DataFusion's footer
    /// and statistics caches never answer for another version of a file), then request
    /// counting.
    fn wrap(&self, built: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        let built = match &self.inner.layer {
            Some(layer) => layer(built),
            None => built,
        };
        let versioned = Arc::new(crate::storage::version::VersionedTimes::new(built));
        Arc::new(CountingStore::new(versioned, self.inner.counts.clone()))
    }

    /// Makes the stores SQL gets from this registry (DataFusion's listing tables) leave out
    /// of their listings what `filter` proves (the first filter set stays).
    pub fn hide_in_listings(&self, filter: Arc<dyn ListingFilter>) {
        let mut hide = self.inner.hide.write().expect("lock");
        if hide.is_none() {
            *hide = Some(filter);
        }
    }

    /// `store` as SQL sees it.
    fn sql_view(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        let Some(filter) = self.inner.hide.read().expect("lock").clone() else {
            return store;
        };
        let key = Arc::as_ptr(&store) as *const () as usize;
        let mut views = self.inner.views.lock().expect("lock");
        let (_, view) = views.entry(key).or_insert_with(|| {
            let view: Arc<dyn ObjectStore> = Arc::new(Hiding::new(store.clone(), filter));
            (store, view)
        });
        view.clone()
    }

    /// The store a view of [`sql_view`](Self::sql_view) wraps (`store` itself otherwise).
    fn unview(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        let views = self.inner.views.lock().expect("lock");
        views
            .values()
            .find(|(_, view)| Arc::ptr_eq(view, &store))
            .map(|(inner, _)| inner.clone())
            .unwrap_or(store)
    }

    /// Requests made so far through every store this registry built.
    pub fn request_counts(&self) -> RequestSnapshot {
        self.inner.counts.snapshot()
    }

    fn key(&self, url: &StorageUrl, cloud: Option<&CloudConfig>) -> StoreKey {
        StoreKey {
            scheme: url.scheme(),
            bucket: url.bucket().to_string(),
            account: url.account().map(str::to_string).or_else(|| match cloud {
                Some(CloudConfig::Azure(a)) => a.account_name.clone(),
                _ => None,
            }),
            endpoint: cloud.and_then(|c| c.endpoint().map(str::to_string)),
            fingerprint: cloud
                .map(|c| c.fingerprint(&self.inner.hasher))
                .unwrap_or(0),
        }
    }

    /// Number of distinct stores built so far (for tests and diagnostics).
    pub fn store_count(&self) -> usize {
        self.inner.stores.lock().expect("lock").len()
    }
}

impl ObjectStoreRegistry for StorageRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let parsed = StorageUrl::parse(url.as_str()).ok()?;
        let old = self.bound(&parsed);
        self.bind(&parsed, self.unview(store));
        old
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let parsed = StorageUrl::parse(url.as_str())?;
        let key = parsed.object_store_url().as_str().to_string();
        self.inner
            .bindings
            .write()
            .expect("lock")
            .remove(&key)
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!(
                    "no object store is registered for {key}"
                ))
            })
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let parsed = StorageUrl::parse(url.as_str())?;
        Ok(self.sql_view(self.sync_store(&parsed)?))
    }
}
