//! Cloud configuration: option keys and aliases, validation, and secret redaction.

use std::collections::HashMap;

use jammi_db::storage::{AzureConfig, CloudConfig, GcsConfig, S3Config, Scheme};

fn opts(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SECRET: &str = "SeCrEt-VaLuE-123";

#[test]
fn datafusion_cli_keys_and_object_store_aliases_set_the_same_fields() {
    let a = CloudConfig::from_options(
        Scheme::S3,
        &opts(&[
            ("aws.access_key_id", "AKID"),
            ("aws.secret_access_key", SECRET),
            ("aws.region", "eu-west-1"),
            ("aws.endpoint", "https://minio.local"),
            ("format.has_header", "true"),
        ]),
    )
    .unwrap()
    .unwrap();
    let b = CloudConfig::from_options(
        Scheme::S3,
        &opts(&[
            ("aws_access_key_id", "AKID"),
            ("aws_secret_access_key", SECRET),
            ("aws_region", "eu-west-1"),
            ("aws_endpoint_url", "https://minio.local"),
        ]),
    )
    .unwrap()
    .unwrap();
    assert_eq!(a, b);
    let CloudConfig::S3(s3) = a else { panic!() };
    assert_eq!(s3.region.as_deref(), Some("eu-west-1"));

    let g = CloudConfig::from_options(Scheme::Gcs, &opts(&[("google_service_account", "/k.json")]))
        .unwrap()
        .unwrap();
    assert_eq!(
        g,
        CloudConfig::Gcs(GcsConfig {
            service_account_path: Some("/k.json".into()),
            ..Default::default()
        })
    );
    let z = CloudConfig::from_options(
        Scheme::Azure,
        &opts(&[
            ("azure_storage_account_name", "acct"),
            ("azure.sas_token", "sv=1&sig=x"),
        ]),
    )
    .unwrap()
    .unwrap();
    let CloudConfig::Azure(z) = z else { panic!() };
    assert_eq!(z.account_name.as_deref(), Some("acct"));
    assert!(z.sas_token.is_some());
}

#[test]
fn no_cloud_keys_means_ambient_credentials() {
    assert_eq!(
        CloudConfig::from_options(Scheme::S3, &opts(&[("format.compression", "gzip")])).unwrap(),
        None
    );
}

#[test]
fn unknown_and_misplaced_keys_are_errors_naming_the_key() {
    let e = CloudConfig::from_options(Scheme::S3, &opts(&[("aws.acess_key_id", "x")])).unwrap_err();
    assert!(e.to_string().contains("aws.acess_key_id"), "{e}");
    assert!(
        e.to_string().contains("aws.access_key_id"),
        "lists valid keys: {e}"
    );
    let e = CloudConfig::from_options(Scheme::Gcs, &opts(&[("aws.region", "x")])).unwrap_err();
    assert!(
        e.to_string().contains("aws.region") && e.to_string().contains("gcp."),
        "{e}"
    );
    let e =
        CloudConfig::from_options(Scheme::File, &opts(&[("azure.account_name", "x")])).unwrap_err();
    assert!(e.to_string().contains("azure.account_name"), "{e}");
    let e =
        CloudConfig::from_options(Scheme::S3, &opts(&[("aws.allow_http", "maybe")])).unwrap_err();
    assert!(e.to_string().contains("aws.allow_http"), "{e}");
}

#[test]
fn partial_credential_sets_are_rejected_naming_the_missing_fields() {
    let cases: Vec<(CloudConfig, &[&str])> = vec![
        (
            CloudConfig::S3(S3Config {
                access_key_id: Some("a".into()),
                ..Default::default()
            }),
            &["aws.secret_access_key"],
        ),
        (
            CloudConfig::S3(S3Config {
                secret_access_key: Some(SECRET.into()),
                ..Default::default()
            }),
            &["aws.access_key_id"],
        ),
        (
            CloudConfig::S3(S3Config {
                session_token: Some(SECRET.into()),
                ..Default::default()
            }),
            &["aws.session_token"],
        ),
        (
            CloudConfig::S3(S3Config {
                access_key_id: Some("a".into()),
                secret_access_key: Some(SECRET.into()),
                skip_signature: Some(true),
                ..Default::default()
            }),
            &["aws.skip_signature"],
        ),
        (
            CloudConfig::S3(S3Config {
                endpoint: Some("http://127.0.0.1:9000".into()),
                ..Default::default()
            }),
            &["aws.allow_http"],
        ),
        (
            CloudConfig::S3(S3Config {
                endpoint: Some("not a url".into()),
                ..Default::default()
            }),
            &["aws.endpoint"],
        ),
        (
            CloudConfig::Gcs(GcsConfig {
                service_account_path: Some("/a".into()),
                service_account_key: Some(SECRET.into()),
                ..Default::default()
            }),
            &["gcp.service_account_path", "gcp.service_account_key"],
        ),
        (
            CloudConfig::Azure(AzureConfig {
                client_secret: Some(SECRET.into()),
                ..Default::default()
            }),
            &["azure.client_id", "azure.tenant_id"],
        ),
        (
            CloudConfig::Azure(AzureConfig {
                client_secret: Some(SECRET.into()),
                client_id: Some("id".into()),
                ..Default::default()
            }),
            &["azure.tenant_id"],
        ),
        (
            CloudConfig::Azure(AzureConfig {
                account_key: Some(SECRET.into()),
                ..Default::default()
            }),
            &["azure.account_name"],
        ),
        (
            CloudConfig::Azure(AzureConfig {
                account_name: Some("acct".into()),
                account_key: Some(SECRET.into()),
                sas_token: Some(SECRET.into()),
                ..Default::default()
            }),
            &["azure.account_key", "azure.sas_token"],
        ),
    ];
    for (cfg, names) in cases {
        let err = cfg
            .validate()
            .expect_err(&format!("{cfg:?} should be rejected"))
            .to_string();
        for n in names {
            assert!(err.contains(n), "error '{err}' does not name {n}");
        }
        assert!(!err.contains(SECRET), "error leaks a secret: {err}");
    }
}

#[test]
fn complete_configurations_validate() {
    for cfg in [
        CloudConfig::S3(S3Config {
            access_key_id: Some("a".into()),
            secret_access_key: Some(SECRET.into()),
            session_token: Some(SECRET.into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            allow_http: Some(true),
            ..Default::default()
        }),
        CloudConfig::Gcs(GcsConfig {
            service_account_path: Some("/sa.json".into()),
            ..Default::default()
        }),
        CloudConfig::Azure(AzureConfig {
            account_name: Some("acct".into()),
            client_id: Some("id".into()),
            client_secret: Some(SECRET.into()),
            tenant_id: Some("t".into()),
            ..Default::default()
        }),
        CloudConfig::Azure(AzureConfig {
            use_emulator: Some(true),
            ..Default::default()
        }),
    ] {
        cfg.validate().unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    }
}

fn all_secrets() -> Vec<CloudConfig> {
    vec![
        CloudConfig::S3(S3Config {
            access_key_id: Some("AKIDPUBLIC".into()),
            secret_access_key: Some(SECRET.into()),
            session_token: Some(format!("{SECRET}-token")),
            ..Default::default()
        }),
        CloudConfig::Gcs(GcsConfig {
            service_account_key: Some(SECRET.into()),
            ..Default::default()
        }),
        CloudConfig::Azure(AzureConfig {
            account_name: Some("acct".into()),
            account_key: Some(SECRET.into()),
            ..Default::default()
        }),
        CloudConfig::Azure(AzureConfig {
            account_name: Some("acct".into()),
            sas_token: Some(format!("sv=1&sig={SECRET}")),
            ..Default::default()
        }),
        CloudConfig::Azure(AzureConfig {
            client_id: Some("id".into()),
            tenant_id: Some("t".into()),
            client_secret: Some(SECRET.into()),
            ..Default::default()
        }),
    ]
}

#[test]
fn secrets_never_appear_in_debug_display_or_serialised_form() {
    for cfg in all_secrets() {
        for text in [
            format!("{cfg:?}"),
            format!("{cfg:#?}"),
            format!("{cfg}"),
            serde_json::to_string(&cfg).unwrap(),
        ] {
            assert!(!text.contains(SECRET), "secret leaked: {text}");
        }
        assert!(format!("{cfg:?}").contains("<redacted>"));
        assert!(cfg.has_secrets());
        assert!(!cfg.without_secrets().has_secrets());
    }
}

#[test]
fn secrets_never_appear_in_option_errors() {
    let e = CloudConfig::from_options(
        Scheme::S3,
        &opts(&[
            ("aws.secret_access_key", SECRET),
            ("aws.region", "bad region!"),
        ]),
    )
    .unwrap_err();
    assert!(!e.to_string().contains(SECRET), "{e}");
    let e = CloudConfig::from_options(Scheme::S3, &opts(&[("aws.secret_access_key", SECRET)]))
        .unwrap_err();
    assert!(
        !e.to_string().contains(SECRET) && !format!("{e:?}").contains(SECRET),
        "{e:?}"
    );
}

#[test]
fn option_maps_of_roots_and_sources_refuse_keys_they_do_not_know_by_name() {
    let err = CloudConfig::from_cloud_options(
        Scheme::S3,
        &opts(&[("aws.region", "eu-west-1"), ("format.has_header", "true")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("'format.has_header'"), "{err}");
    let cloud =
        CloudConfig::from_cloud_options(Scheme::S3, &opts(&[("aws_region", "eu-west-1")])).unwrap();
    assert!(
        matches!(cloud, Some(CloudConfig::S3(ref s)) if s.region.as_deref() == Some("eu-west-1"))
    );

    use jammi_db::source::{FileFormat, SourceConnection};
    let conn = SourceConnection::from_options(
        "s3://bucket/data/",
        Some("csv"),
        &opts(&[
            ("aws.secret_access_key", SECRET),
            ("aws.access_key_id", "AKID"),
            ("format.delimiter", ";"),
        ]),
    )
    .unwrap();
    assert_eq!(conn.format, Some(FileFormat::Csv));
    assert_eq!(
        conn.options.get("format.delimiter").map(String::as_str),
        Some(";")
    );
    assert!(matches!(conn.cloud, Some(CloudConfig::S3(_))));
    for (url, key) in [
        ("s3://bucket/x.parquet", "colour"),
        ("/tmp/x.parquet", "aws.region"),
        ("gs://bucket/x.parquet", "aws.region"),
    ] {
        let err = SourceConnection::from_options(url, None, &opts(&[(key, SECRET)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && !err.contains(SECRET),
            "{url} {key}: {err}"
        );
    }
}
