//! datafusion-cli's REPL (its editor, highlighting, `\d` commands and print formats) over a
//! session with jammi-db registered: sources and result tables under `ROOT` (default
//! `./jammi-data`), every storage scheme in `CREATE EXTERNAL TABLE`, `vector_search`.
//!
//! ```sh
//! cargo run -p jammi-datafusion-cli -- ./my-root
//! ```

use std::sync::Arc;

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_cli::exec::exec_from_repl;
use datafusion_cli::object_storage::instrumented::InstrumentedObjectStoreRegistry;
use datafusion_cli::print_format::PrintFormat;
use datafusion_cli::print_options::{MaxRows, PrintOptions};
use jammi_db::catalog::Catalog;
use jammi_db::storage::{StorageRegistry, StorageUrl};
use jammi_db::store::ResultStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "jammi-data".into());
    let root = StorageUrl::parse(&root)?;
    if let Some(dir) = root.local_path() {
        std::fs::create_dir_all(dir)?;
    }
    // The context datafusion-cli would build, with jammi-db added to it.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    let registry = StorageRegistry::new();
    let catalog = Catalog::new(root.clone(), registry.clone(), None);
    let store = Arc::new(ResultStore::with_root(root, registry.clone(), catalog)?);
    jammi_db::register(&ctx, &registry, Some(store)).await?;
    let mut print_options = PrintOptions {
        format: PrintFormat::Automatic,
        quiet: false,
        maxrows: MaxRows::Limited(40),
        color: true,
        instrumented_registry: Arc::new(InstrumentedObjectStoreRegistry::new()),
    };
    println!(
        "DataFusion CLI v{} with jammi-db",
        datafusion_cli::DATAFUSION_CLI_VERSION
    );
    exec_from_repl(&ctx, &mut print_options).await?;
    Ok(())
}
