//! `StorageUrl`: parsing, canonical display, aliases and errors, table-driven.

use jammi_db::JammiError;
use jammi_db::storage::{Scheme, StorageUrl};

/// (input, expected canonical form) for inputs that must parse.
const VALID: &[(&str, &str)] = &[
    ("/data/papers.parquet", "file:///data/papers.parquet"),
    ("/data/dir/", "file:///data/dir/"),
    ("/data/a b.parquet", "file:///data/a%20b.parquet"),
    ("/data/x/../y.csv", "file:///data/y.csv"),
    ("/data/./y.csv", "file:///data/y.csv"),
    ("/", "file:///"),
    ("file:///data/papers.parquet", "file:///data/papers.parquet"),
    ("file://localhost/data/p.parquet", "file:///data/p.parquet"),
    ("file:///data/a%20b.parquet", "file:///data/a%20b.parquet"),
    ("file:///data/dir/", "file:///data/dir/"),
    ("memory:///", "memory:///"),
    ("memory://", "memory:///"),
    ("memory:///t/x.parquet", "memory:///t/x.parquet"),
    ("memory://bkt/x.parquet", "memory://bkt/x.parquet"),
    ("s3://bucket/key.parquet", "s3://bucket/key.parquet"),
    ("s3://bucket", "s3://bucket/"),
    ("s3://bucket/", "s3://bucket/"),
    ("s3://bucket/dir/", "s3://bucket/dir/"),
    ("s3a://bucket/key.parquet", "s3://bucket/key.parquet"),
    ("S3://bucket/k", "s3://bucket/k"),
    ("s3://bucket/a b/c.parquet", "s3://bucket/a%20b/c.parquet"),
    ("s3://bucket/a%20b/c.parquet", "s3://bucket/a%20b/c.parquet"),
    ("s3://bucket/a/../b.parquet", "s3://bucket/b.parquet"),
    ("s3://my.bucket-1/k", "s3://my.bucket-1/k"),
    ("s3://bucket/data/*.parquet", "s3://bucket/data/*.parquet"),
    ("gs://bucket/k.parquet", "gs://bucket/k.parquet"),
    ("gcs://bucket/k.parquet", "gs://bucket/k.parquet"),
    (
        "gs://bucket_with_underscore/k",
        "gs://bucket_with_underscore/k",
    ),
    (
        "azure://container/path/x.parquet",
        "azure://container/path/x.parquet",
    ),
    ("az://container/x.parquet", "azure://container/x.parquet"),
    ("azure://container", "azure://container/"),
    (
        "abfss://ctr@acct.dfs.core.windows.net/path/x.parquet",
        "abfss://ctr@acct.dfs.core.windows.net/path/x.parquet",
    ),
    (
        "abfs://ctr@acct.dfs.core.windows.net/x",
        "abfss://ctr@acct.dfs.core.windows.net/x",
    ),
    (
        "abfss://ctr@acct.blob.core.windows.net/x",
        "abfss://ctr@acct.dfs.core.windows.net/x",
    ),
    (
        "https://acct.blob.core.windows.net/ctr/dir/x.parquet",
        "abfss://ctr@acct.dfs.core.windows.net/dir/x.parquet",
    ),
    (
        "https://acct.dfs.core.windows.net/ctr/",
        "abfss://ctr@acct.dfs.core.windows.net/",
    ),
];

/// (input, text the error must contain) for inputs that must fail.
const INVALID: &[(&str, &str)] = &[
    ("", "empty location"),
    ("   ", "empty location"),
    ("ftp://host/x", "unsupported scheme 'ftp'"),
    ("hdfs://nn/x", "s3://"),
    ("http://example.com/x.parquet", "unsupported scheme"),
    ("https://example.com/x.parquet", "only Azure blob endpoints"),
    ("s3://", "missing bucket"),
    ("s3:///key", "missing bucket"),
    ("gs://", "missing bucket"),
    ("azure://", "missing bucket"),
    ("s3://user@bucket/k", "user info"),
    ("s3://bucket:9000/k", "port"),
    ("s3://buck$et/k", "invalid bucket"),
    ("s3://bucket/k?x-amz-signature=abc", "query strings"),
    ("azure://ctr/x?sig=SECRET", "query strings"),
    (
        "abfss://acct.dfs.core.windows.net/x",
        "container before '@'",
    ),
    ("abfss://ctr@example.com/x", "dfs.core.windows.net"),
    ("https://acct.blob.core.windows.net/", "missing container"),
    ("file://otherhost/x", "cannot name a host"),
];

#[test]
fn valid_inputs_parse_to_their_canonical_form_and_round_trip() {
    for (input, canonical) in VALID {
        let url = StorageUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(url.to_string(), *canonical, "input {input}");
        let again = StorageUrl::parse(&url.to_string()).unwrap();
        assert_eq!(again, url, "parse(display(x)) != x for {input}");
        assert_eq!(again.to_string(), *canonical);
    }
}

#[test]
fn invalid_inputs_fail_with_a_message_naming_the_problem() {
    for (input, needle) in INVALID {
        let err = StorageUrl::parse(input).expect_err(input).to_string();
        assert!(
            err.contains(needle),
            "{input}: error '{err}' lacks '{needle}'"
        );
    }
    assert!(VALID.len() + INVALID.len() >= 40);
}

#[test]
fn unsupported_scheme_errors_list_the_accepted_schemes() {
    let err = StorageUrl::parse("ftp://h/x").unwrap_err().to_string();
    for s in [
        "file://",
        "memory://",
        "s3://",
        "gs://",
        "azure://",
        "abfss://",
    ] {
        assert!(err.contains(s), "{err} lacks {s}");
    }
}

#[test]
fn errors_never_echo_query_strings_which_may_hold_sas_tokens() {
    let err = StorageUrl::parse("azure://ctr/x?sv=2020&sig=SUPERSECRET").unwrap_err();
    assert!(!err.to_string().contains("SUPERSECRET"), "{err}");
    assert!(!format!("{err:?}").contains("SUPERSECRET"));
}

#[test]
fn relative_paths_become_absolute_file_urls() {
    let url = StorageUrl::parse("some/dir/x.parquet").unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(url.scheme(), Scheme::File);
    assert_eq!(url.local_path().unwrap(), cwd.join("some/dir/x.parquet"));
    let up = StorageUrl::parse("../x.csv").unwrap();
    assert_eq!(
        up.local_path().unwrap(),
        cwd.parent().unwrap().join("x.csv")
    );
}

#[test]
fn components_are_exposed_decoded() {
    let u = StorageUrl::parse("s3://bkt/dir/my file.v1.parquet").unwrap();
    assert_eq!(u.scheme(), Scheme::S3);
    assert_eq!(u.bucket(), "bkt");
    assert_eq!(u.file_name(), "my file.v1.parquet");
    assert_eq!(u.file_stem(), "my file");
    assert_eq!(u.object_path().unwrap().as_ref(), "dir/my file.v1.parquet");
    assert_eq!(u.parent().to_string(), "s3://bkt/dir/");
    assert!(!u.is_prefix());
    let a = StorageUrl::parse("abfss://ctr@acct.dfs.core.windows.net/p/x").unwrap();
    assert_eq!((a.bucket(), a.account()), ("ctr", Some("acct")));
    assert_eq!(
        a.object_store_url().as_str(),
        "abfss://ctr@acct.dfs.core.windows.net/"
    );
    assert_eq!(
        StorageUrl::parse("s3://b/k")
            .unwrap()
            .object_store_url()
            .as_str(),
        "s3://b/"
    );
}

#[test]
fn join_encodes_segments_and_refuses_to_escape_the_root() {
    let root = StorageUrl::parse("s3://bkt/root").unwrap();
    assert_eq!(
        root.join("a b.parquet").unwrap().to_string(),
        "s3://bkt/root/a%20b.parquet"
    );
    assert_eq!(root.join("x/y").unwrap().to_string(), "s3://bkt/root/x/y");
    assert!(root.join("../etc").is_err());
    assert!(root.join("a//b").is_err());
    assert_eq!(root.as_prefix().to_string(), "s3://bkt/root/");
}

#[test]
fn schemes_without_their_feature_name_the_feature_to_enable() {
    for (url, feature) in [
        ("s3://b/k", "storage-s3"),
        ("gs://b/k", "storage-gcs"),
        ("azure://c/k", "storage-azure"),
    ] {
        let u = StorageUrl::parse(url).unwrap();
        let enabled = u.scheme().is_enabled();
        match u.check_enabled() {
            Ok(()) => assert!(enabled),
            Err(e) => {
                assert!(!enabled);
                assert!(matches!(e, JammiError::FeatureNotEnabled { .. }));
                assert!(e.to_string().contains(feature), "{e}");
            }
        }
    }
}
