//! `StorageUrl`: one parsed, canonical location on any backend.
//!
//! Parsing never depends on cargo features, so a build without `storage-s3` still gives a
//! precise "enable storage-s3" error instead of "unknown scheme".

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::error::{JammiError, Result};

/// The accepted URL forms, quoted in every "unsupported scheme" error.
pub const ACCEPTED_SCHEMES: &str = "a local path, file://, memory://, s3:// (s3a://), gs:// (gcs://), \
     azure:// (az://), abfss://container@account.dfs.core.windows.net/ (abfs://), \
     https://<account>.blob.core.windows.net/<container>/";

/// The storage backend a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Local file system (`file://`).
    File,
    /// In-process memory store (`memory://`), for hermetic tests.
    Memory,
    /// Amazon S3 and S3-compatible stores (`s3://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage / ADLS Gen2 (`azure://`, `abfss://`).
    Azure,
}

impl Scheme {
    /// Cargo feature that compiles this backend in, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Scheme::File | Scheme::Memory => None,
            Scheme::S3 => Some("storage-s3"),
            Scheme::Gcs => Some("storage-gcs"),
            Scheme::Azure => Some("storage-azure"),
        }
    }

    /// Whether this build has the backend compiled in.
    pub fn is_enabled(self) -> bool {
        match self {
            Scheme::File | Scheme::Memory => true,
            Scheme::S3 => cfg!(feature = "storage-s3"),
            Scheme::Gcs => cfg!(feature = "storage-gcs"),
            Scheme::Azure => cfg!(feature = "storage-azure"),
        }
    }

    /// Whether objects live in a remote service (and so go through the local cache).
    pub fn is_remote(self) -> bool {
        matches!(self, Scheme::S3 | Scheme::Gcs | Scheme::Azure)
    }
}

/// A parsed storage location: a local path or an object-store URL, in canonical form.
///
/// `Display` prints the canonical form and `StorageUrl::parse(&url.to_string())` gives the
/// same value back. Aliases are folded (`s3a` → `s3`, `gcs` → `gs`, `az` → `azure`,
/// `abfs` → `abfss`), relative paths are made absolute, and `.`/`..` are resolved.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorageUrl {
    scheme: Scheme,
    /// Canonical URL; its path is percent-encoded and starts with `/`.
    url: Url,
    /// Azure storage account for `abfss://` URLs.
    account: Option<String>,
}

impl StorageUrl {
    /// Parses a path or URL. See the type docs for the accepted forms.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| JammiError::InvalidUrl {
            url: redact_query(input),
            reason: reason.to_string(),
        };
        if input.trim().is_empty() {
            return Err(bad("empty location"));
        }
        let Some(scheme_end) = url_scheme_len(input) else {
            return Self::from_local_path(Path::new(input)).map_err(|e| match e {
                JammiError::InvalidUrl { reason, .. } => bad(&reason),
                other => other,
            });
        };
        let raw_scheme = input[..scheme_end].to_ascii_lowercase();
        let url = Url::parse(input).map_err(|e| bad(&e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "query strings and fragments are not accepted; pass credentials such as SAS \
                 tokens through the cloud configuration",
            ));
        }
        match raw_scheme.as_str() {
            "file" => {
                match url.host_str() {
                    None | Some("") | Some("localhost") => {}
                    Some(h) => return Err(bad(&format!("file URLs cannot name a host ('{h}')"))),
                }
                let path = url
                    .to_file_path()
                    .map_err(|_| bad("not an absolute file path"))?;
                let dir = url.path().ends_with('/');
                Self::local(&path, dir).map_err(|_| bad("not a valid file path"))
            }
            "memory" => {
                no_userinfo_or_port(&url).map_err(|r| bad(&r))?;
                let host = url.host_str().unwrap_or("");
                Self::build(Scheme::Memory, "memory", host, None, &url).map_err(|r| bad(&r))
            }
            "s3" | "s3a" => Self::bucket_url(Scheme::S3, "s3", &url).map_err(|r| bad(&r)),
            "gs" | "gcs" => Self::bucket_url(Scheme::Gcs, "gs", &url).map_err(|r| bad(&r)),
            "azure" | "az" => Self::bucket_url(Scheme::Azure, "azure", &url).map_err(|r| bad(&r)),
            "abfss" | "abfs" => {
                let container = url.username();
                if container.is_empty() {
                    return Err(bad(
                        "abfss URLs name the container before '@': abfss://container@account.dfs.core.windows.net/path",
                    ));
                }
                let host = url.host_str().unwrap_or("");
                let account = azure_account(host).ok_or_else(|| {
                    bad("expected a host of the form <account>.dfs.core.windows.net")
                })?;
                Self::azure_with_account(container, account, &url).map_err(|r| bad(&r))
            }
            "https" | "http" => {
                let host = url.host_str().unwrap_or("");
                let Some(account) = azure_account(host) else {
                    return Err(bad(&format!(
                        "unsupported scheme '{raw_scheme}' (only Azure blob endpoints are accepted over https); accepted: {ACCEPTED_SCHEMES}"
                    )));
                };
                let mut segments = url.path().trim_start_matches('/').splitn(2, '/');
                let container = segments.next().unwrap_or("");
                if container.is_empty() {
                    return Err(bad("missing container after the account host"));
                }
                let rest = format!("/{}", segments.next().unwrap_or(""));
                let mut inner = url.clone();
                inner.set_path(&rest);
                Self::azure_with_account(container, account, &inner).map_err(|r| bad(&r))
            }
            other => Err(bad(&format!(
                "unsupported scheme '{other}'; accepted: {ACCEPTED_SCHEMES}"
            ))),
        }
    }

    /// A local path (absolute or relative to the current directory) as a `file://` URL.
    pub fn from_local_path(path: &Path) -> Result<Self> {
        let dir = path.as_os_str().to_string_lossy().ends_with('/');
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()?.join(path)
        };
        Self::local(&abs, dir)
    }

    fn local(abs: &Path, dir: bool) -> Result<Self> {
        let mut norm = PathBuf::from("/");
        for c in abs.components() {
            match c {
                Component::ParentDir => {
                    norm.pop();
                }
                Component::Normal(p) => norm.push(p),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        let url = if dir {
            Url::from_directory_path(&norm)
        } else {
            Url::from_file_path(&norm)
        }
        .map_err(|_| JammiError::InvalidUrl {
            url: abs.display().to_string(),
            reason: "not a valid local path".into(),
        })?;
        Ok(StorageUrl {
            scheme: Scheme::File,
            url,
            account: None,
        })
    }

    fn bucket_url(scheme: Scheme, name: &str, url: &Url) -> std::result::Result<Self, String> {
        no_userinfo_or_port(url)?;
        let bucket = url.host_str().unwrap_or("");
        if bucket.is_empty() {
            return Err(format!("missing bucket: expected {name}://<bucket>/<key>"));
        }
        Self::build(scheme, name, bucket, None, url)
    }

    fn azure_with_account(
        container: &str,
        account: &str,
        url: &Url,
    ) -> std::result::Result<Self, String> {
        if !account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "invalid Azure storage account name '{account}' (lower-case letters and digits)"
            ));
        }
        Self::build(Scheme::Azure, "azure", container, Some(account), url)
    }

    fn build(
        scheme: Scheme,
        name: &str,
        bucket: &str,
        account: Option<&str>,
        url: &Url,
    ) -> std::result::Result<Self, String> {
        if !bucket.is_empty() {
            check_bucket(bucket)?;
        }
        let path = normalize_url_path(url.path());
        let canonical = match account {
            Some(acct) => format!("abfss://{bucket}@{acct}.dfs.core.windows.net{path}"),
            None => format!("{name}://{bucket}{path}"),
        };
        let url = Url::parse(&canonical).map_err(|e| e.to_string())?;
        Ok(StorageUrl {
            scheme,
            url,
            account: account.map(str::to_string),
        })
    }

    /// The backend.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Bucket (S3, GCS), container (Azure) or memory-store name; empty for `file://`.
    pub fn bucket(&self) -> &str {
        if self.account.is_some() {
            self.url.username()
        } else {
            self.url.host_str().unwrap_or("")
        }
    }

    /// Azure storage account named in an `abfss://` URL.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The canonical URL.
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// The object key inside the bucket (or the absolute path for `file://`), decoded.
    pub fn object_path(&self) -> Result<ObjectPath> {
        ObjectPath::from_url_path(self.url.path()).map_err(|e| JammiError::InvalidUrl {
            url: self.to_string(),
            reason: e.to_string(),
        })
    }

    /// For `file://` URLs, the local path.
    pub fn local_path(&self) -> Option<PathBuf> {
        match self.scheme {
            Scheme::File => self.url.to_file_path().ok(),
            _ => None,
        }
    }

    /// `true` if the URL names a directory or prefix (ends with `/`, or is a bucket root).
    pub fn is_prefix(&self) -> bool {
        self.url.path().ends_with('/')
    }

    /// `true` if the key holds glob characters (`*`, `?`, `[`).
    pub fn has_glob(&self) -> bool {
        let p = self.url.path();
        p.contains('*') || p.contains('?') || p.contains('[')
    }

    /// Last path segment, decoded (`""` for a prefix).
    pub fn file_name(&self) -> String {
        let last = self.url.path().rsplit('/').next().unwrap_or("");
        percent_decode(last)
    }

    /// File name without its extension(s) after the first `.` (`papers.parquet` → `papers`).
    pub fn file_stem(&self) -> String {
        let name = self.file_name();
        match name.find('.') {
            Some(0) | None => name,
            Some(i) => name[..i].to_string(),
        }
    }

    /// The same location as a prefix (trailing `/`).
    pub fn as_prefix(&self) -> StorageUrl {
        if self.is_prefix() {
            return self.clone();
        }
        let mut url = self.url.clone();
        url.set_path(&format!("{}/", url.path()));
        StorageUrl {
            url,
            ..self.clone()
        }
    }

    /// The prefix holding this object (everything up to the last `/`).
    pub fn parent(&self) -> StorageUrl {
        let path = self.url.path().trim_end_matches('/');
        let cut = path.rfind('/').map(|i| i + 1).unwrap_or(1);
        let mut url = self.url.clone();
        url.set_path(&path[..cut]);
        StorageUrl {
            url,
            ..self.clone()
        }
    }

    /// A child of this prefix: `root.join("a/b.parquet")`. Segments are percent-encoded;
    /// `..` and empty segments are rejected so a name can never escape its root.
    pub fn join(&self, relative: &str) -> Result<StorageUrl> {
        let mut path = self.url.path().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        let mut segs = relative.split('/').peekable();
        while let Some(seg) = segs.next() {
            let last = segs.peek().is_none();
            if seg == ".." || seg == "." || (seg.is_empty() && !last) {
                return Err(JammiError::InvalidInput(format!(
                    "invalid path segment '{seg}' in '{relative}' (joined to {self})"
                )));
            }
            path.push_str(&percent_encode(seg));
            if !last {
                path.push('/');
            }
        }
        let mut url = self.url.clone();
        url.set_path(&path);
        Ok(StorageUrl {
            url,
            ..self.clone()
        })
    }

    /// `scheme://bucket/` — the key DataFusion's object-store registry resolves stores by.
    pub fn object_store_url(&self) -> ObjectStoreUrl {
        let base = match (self.scheme, &self.account) {
            (Scheme::File, _) => "file:///".to_string(),
            (_, Some(acct)) => format!("abfss://{}@{acct}.dfs.core.windows.net/", self.bucket()),
            _ => format!("{}://{}/", self.url.scheme(), self.bucket()),
        };
        ObjectStoreUrl::parse(base).expect("canonical store URL parses")
    }

    /// Error for a scheme whose backend is not compiled in (`None` if it is).
    pub fn check_enabled(&self) -> Result<()> {
        match self.scheme.feature() {
            Some(feature) if !self.scheme.is_enabled() => Err(JammiError::FeatureNotEnabled {
                scheme: self.url.scheme().to_string(),
                feature,
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageUrl({})", self.url.as_str())
    }
}

impl FromStr for StorageUrl {
    type Err = JammiError;
    fn from_str(s: &str) -> Result<Self> {
        StorageUrl::parse(s)
    }
}

/// Length of a URL scheme prefix (`s3` in `s3://`), if the input is a URL.
fn url_scheme_len(input: &str) -> Option<usize> {
    let colon = input.find("://")?;
    let scheme = &input[..colon];
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))).then_some(colon)
}

fn no_userinfo_or_port(url: &Url) -> std::result::Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user info ('user@') is not accepted in this scheme".into());
    }
    if url.port().is_some() {
        return Err(
            "a port is not accepted here; set the endpoint in the cloud configuration".into(),
        );
    }
    Ok(())
}

fn check_bucket(bucket: &str) -> std::result::Result<(), String> {
    let ok = bucket.len() <= 222
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid bucket or container name '{bucket}'"))
    }
}

/// `account.dfs.core.windows.net` / `account.blob.core.windows.net` → `account`.
fn azure_account(host: &str) -> Option<&str> {
    let (account, domain) = host.split_once('.')?;
    matches!(domain, "dfs.core.windows.net" | "blob.core.windows.net")
        .then_some(account)
        .filter(|a| !a.is_empty())
}

/// Resolves `.` and `..` segments and guarantees a leading `/`.
fn normalize_url_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.is_empty();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = format!("/{}", out.join("/"));
    if trailing && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Removes a query string before echoing user input in an error (SAS tokens live there).
fn redact_query(input: &str) -> String {
    match input.find('?') {
        Some(i) if input.contains("://") => format!("{}?<redacted>", &input[..i]),
        _ => input.to_string(),
    }
}

fn percent_encode(seg: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'/');
    percent_encoding::utf8_percent_encode(seg, SET).to_string()
}

fn percent_decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}
