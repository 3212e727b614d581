//! The quick start: everything on the embedded default (a local directory), no cloud account.
//!
//! 1. open a database under `./jammi-quickstart` (override with the first argument);
//! 2. register the bundled sample (1,000 Debian package descriptions with real
//!    all-MiniLM-L6-v2 embeddings) as the source `debian`, and query it with SQL;
//! 3. write a result table with its USearch index (Parquet + sidecars under the root);
//! 4. search it with `vector_search`, with and without a pre-filter.
//!
//! Run: `cargo run --example quickstart`

use jammi_db::session::JammiSession;
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::store::TableSpec;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "jammi-quickstart".into());
    let session = JammiSession::open(&root).await?;
    println!("database root: {}", session.catalog().root());

    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/data/debian_sample.parquet"
    );
    if session.catalog().source("debian").await?.is_none() {
        session
            .add_source(
                "debian",
                SourceType::File,
                SourceConnection {
                    url: Some(sample.to_string()),
                    format: Some(FileFormat::Parquet),
                    ..Default::default()
                },
            )
            .await?;
    }
    println!("\n-- the source, queried with SQL");
    session
        .sql(
            "SELECT section, count(*) AS packages FROM debian.public.debian_sample \
             GROUP BY section ORDER BY packages DESC LIMIT 5",
        )
        .await?
        .show()
        .await?;

    println!("\n-- a result table with its vector index");
    let rows = session
        .sql("SELECT id, package, section, text, embedding FROM debian.public.debian_sample")
        .await?;
    let manifest = session
        .write_result_table(
            &TableSpec {
                source: "debian".into(),
                task: "text_embedding".into(),
                model: "all-MiniLM-L6-v2".into(),
                key_column: Some("id".into()),
                vector_column: Some("embedding".into()),
                ..Default::default()
            },
            rows,
        )
        .await?;
    let index = manifest.index.as_ref().expect("indexed");
    println!(
        "wrote {} ({} rows, {}-d {} index)",
        manifest.table, manifest.rows, index.dimensions, index.metric
    );

    // Use one package's embedding as the query: its nearest neighbours by meaning.
    let probe = session
        .sql("SELECT package, embedding FROM debian.public.debian_sample WHERE package LIKE 'python3-%' ORDER BY id LIMIT 1")
        .await?
        .collect()
        .await?;
    let package = datafusion::arrow::util::display::array_value_to_string(probe[0].column(0), 0)?;
    let vector = datafusion::arrow::util::display::array_value_to_string(probe[0].column(1), 0)?;
    println!("\n-- the 5 packages nearest to {package}");
    session
        .sql(&format!(
            "SELECT package, section, round(_distance, 4) AS distance \
             FROM vector_search('{}', {vector}, 5)",
            manifest.table
        ))
        .await?
        .show()
        .await?;
    println!("\n-- the same search restricted to section 'doc' (pre-filter)");
    session
        .sql(&format!(
            "SELECT package, section, round(_distance, 4) AS distance \
             FROM vector_search('{}', {vector}, 5, 'filter=section = ''doc''')",
            manifest.table
        ))
        .await?
        .show()
        .await?;
    println!(
        "\nresult tables under {}: {:?}",
        session.catalog().root(),
        session.list_tables().await?
    );
    Ok(())
}
