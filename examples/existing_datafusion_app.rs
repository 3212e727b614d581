//! An existing DataFusion application adds jammi-db with one call: storage URLs in
//! `CREATE EXTERNAL TABLE`, the `aws.*`/`gcp.*`/`azure.*` option namespaces, result tables
//! under the catalog `jammi`, and `vector_search`.
//!
//! Run: `cargo run --example existing_datafusion_app`

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use jammi_db::catalog::Catalog;
use jammi_db::storage::{StorageRegistry, StorageUrl};
use jammi_db::store::ResultStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The application's own context, configured however it likes.
    let ctx = SessionContext::new();

    // Result tables live under a root (any storage URL); here a temporary directory.
    let dir = tempfile::tempdir()?;
    let root = StorageUrl::parse(dir.path().join("results").to_str().expect("utf-8 path"))?;
    let registry = StorageRegistry::new();
    let catalog = Catalog::new(root.clone(), registry.clone(), None);
    let store = Arc::new(ResultStore::with_root(root, registry.clone(), catalog)?);

    // One call installs everything.
    jammi_db::register(&ctx, &registry, Some(store)).await?;

    // Indexing a file writes its sidecars beside it: a copy in the temporary directory, so
    // the checkout stays as it is.
    let sample = dir.path().join("debian_sample.parquet");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/data/debian_sample.parquet"
        ),
        &sample,
    )?;
    let sample = sample.display();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE debian STORED AS PARQUET LOCATION '{sample}' \
         OPTIONS ('jammi.vector_column' 'embedding')"
    ))
    .await?;
    ctx.sql("SELECT count(*) AS rows, count(DISTINCT section) AS sections FROM debian")
        .await?
        .show()
        .await?;

    // A result table from SQL: CREATE TABLE in the `jammi` catalog writes Parquet + index.
    ctx.sql(
        "CREATE TABLE jammi.public.docs AS \
         SELECT id, package, embedding FROM debian WHERE section = 'doc'",
    )
    .await?
    .collect()
    .await?;
    let jammi = ctx.catalog("jammi").expect("registered");
    let tables = jammi.schema("public").expect("public").table_names();
    println!("result tables: {tables:?}");
    ctx.sql("SELECT count(*) AS docs FROM jammi.public.docs")
        .await?
        .show()
        .await?;

    let probe = ctx
        .sql("SELECT embedding FROM debian WHERE id = 0")
        .await?
        .collect()
        .await?;
    let vector = datafusion::arrow::util::display::array_value_to_string(probe[0].column(0), 0)?;
    ctx.sql(&format!(
        "SELECT package, round(_distance, 4) AS distance FROM vector_search('debian', {vector}, 3)"
    ))
    .await?
    .show()
    .await?;
    Ok(())
}
