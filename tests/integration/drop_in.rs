//! `jammi_db::register` adds jammi-db to a plain `SessionContext` and changes nothing else:
//! the same statements give the same answers (and the same errors) with and without it.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use jammi_db::storage::StorageRegistry;
use std::sync::Arc;

use crate::common::tempdir;

/// A plain context and one with jammi-db registered (twice: that must be harmless too).
async fn pair() -> (SessionContext, SessionContext) {
    let new = || {
        SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(true),
        )
    };
    let jammi = new();
    let id = jammi.session_id();
    let registry = StorageRegistry::new();
    let first = jammi_db::register(&jammi, &registry, None).await.unwrap();
    let second = jammi_db::register(&jammi, &registry, None).await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "a second register adds nothing"
    );
    assert_eq!(jammi.session_id(), id, "the session keeps its id");
    (new(), jammi)
}

/// What a statement gives: its batches as text (with the schema), or its error.
async fn answer(ctx: &SessionContext, sql: &str) -> String {
    let result = match ctx.sql(sql).await {
        Ok(df) => {
            let schema = format!("{:?}", df.schema().as_arrow());
            df.collect().await.map(|b| (schema, b))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((schema, batches)) => format!("{schema}\n{}", text(&batches)),
        Err(e) => format!("error: {e}"),
    }
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// Runs `statements` on both contexts, asserting each gives the same answer.
async fn same_answers(statements: &[String]) {
    let (plain, jammi) = pair().await;
    for sql in statements {
        let (a, b) = (answer(&plain, sql).await, answer(&jammi, sql).await);
        assert_eq!(a, b, "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn external_tables_with_a_declared_schema_take_inserts_as_in_datafusion() {
    let dir = tempdir();
    let d = dir.path().display();
    // Each context writes its own copy of the directories.
    for who in ["plain", "jammi"] {
        std::fs::create_dir_all(dir.path().join(who)).unwrap();
    }
    let (plain, jammi) = pair().await;
    for (ctx, who) in [(&plain, "plain"), (&jammi, "jammi")] {
        let statements = [
            format!(
                "CREATE EXTERNAL TABLE dir_t (a INT, b VARCHAR) STORED AS PARQUET LOCATION '{d}/{who}/new_dir/'"
            ),
            "INSERT INTO dir_t VALUES (1, 'x'), (2, 'y')".to_string(),
            "SELECT * FROM dir_t ORDER BY a".to_string(),
            format!(
                "CREATE EXTERNAL TABLE file_t (a INT) STORED AS CSV LOCATION '{d}/{who}/one.csv'"
            ),
            "INSERT INTO file_t VALUES (7)".to_string(),
            "SELECT * FROM file_t".to_string(),
            format!(
                "CREATE UNBOUNDED EXTERNAL TABLE stream_t (a INT) STORED AS CSV LOCATION '{d}/{who}/one.csv'"
            ),
            "EXPLAIN SELECT a FROM stream_t".to_string(),
            format!(
                "CREATE EXTERNAL TABLE part_t (a INT, p INT) STORED AS PARQUET PARTITIONED BY (p) LOCATION '{d}/{who}/parts/'"
            ),
            "INSERT INTO part_t VALUES (1, 10), (2, 20)".to_string(),
            "SELECT a, p FROM part_t ORDER BY a".to_string(),
            format!(
                "CREATE EXTERNAL TABLE empty_t STORED AS PARQUET LOCATION '{d}/{who}/new_dir_2/'"
            ),
        ];
        let mut answers = Vec::new();
        for sql in &statements {
            answers.push(answer(ctx, sql).await.replace(who, "WHO"));
        }
        if who == "plain" {
            std::fs::write(dir.path().join("plain.answers"), answers.join("\n---\n")).unwrap();
        } else {
            let expected = std::fs::read_to_string(dir.path().join("plain.answers")).unwrap();
            let got = answers.join("\n---\n");
            std::fs::write(dir.path().join("jammi.answers"), &got).unwrap();
            if got != expected {
                let diff = std::process::Command::new("diff")
                    .arg(dir.path().join("plain.answers"))
                    .arg(dir.path().join("jammi.answers"))
                    .output()
                    .unwrap();
                panic!("{}", String::from_utf8_lossy(&diff.stdout));
            }
            // The answers include DataFusion's own refusals (inserting into one file).
            assert!(
                got.contains("| 1 | x |") && got.contains("single file"),
                "{got}"
            );
            assert!(got.contains("StreamingTableExec"), "{got}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn datafusions_distance_functions_keep_their_answers() {
    let calls = [
        "cosine_distance([1.0, 0.0], [0.0, 1.0])",
        "cosine_distance([1.0, NULL], [1.0, 2.0])",
        "cosine_distance([0.0, 0.0], [1.0, 2.0])",
        "cosine_distance(NULL, [1.0, 2.0])",
        "cosine_distance([1, 2], [1.0, 2.0, 3.0])",
        "inner_product([1.0, 2.0], [3.0, 4.0])",
        "inner_product([1.0, NULL], [3.0, 4.0])",
        "inner_product([1, 2], [3])",
        "dot_product(arrow_cast([1.0, 2.0], 'FixedSizeList(2, Float32)'), [3.0, 4.0])",
        "array_distance([3.0, 0.0], [0.0, 4.0])",
    ];
    let statements: Vec<String> = calls
        .iter()
        .map(|c| format!("SELECT {c} AS d, arrow_typeof({c}) AS t"))
        .collect();
    same_answers(&statements).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn l2_distance_is_datafusions_array_distance_under_pgvectors_name() {
    let (_, jammi) = pair().await;
    for (args, expected) in [
        ("[3.0, 0.0], [0.0, 4.0]", "| 5.0 |"),
        ("[1.0, NULL], [1.0, 2.0]", "|   |"),
        (
            "arrow_cast([3.0, 0.0], 'FixedSizeList(2, Float32)'), [0.0, 4.0]",
            "| 5.0 |",
        ),
    ] {
        let ours = answer(&jammi, &format!("SELECT l2_distance({args}) AS d")).await;
        let theirs = answer(&jammi, &format!("SELECT array_distance({args}) AS d")).await;
        assert_eq!(
            ours.replace("l2_distance", "array_distance"),
            theirs,
            "{args}"
        );
        assert!(ours.contains(expected), "{ours}");
        assert!(ours.contains("Float64"), "{ours}");
    }
    let e = answer(&jammi, "SELECT l2_distance([1.0], [1.0, 2.0])").await;
    assert!(e.starts_with("error:") && e.contains("length"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_and_function_listings_change_only_by_what_register_adds() {
    let (plain, jammi) = pair().await;
    assert_eq!(
        answer(&plain, "SHOW ALL").await,
        answer(&jammi, "SHOW ALL").await
    );
    let routines = "SELECT routine_name, function_type, data_type FROM information_schema.routines \
                    WHERE routine_name <> 'l2_distance' \
                    ORDER BY routine_name, function_type, data_type";
    assert_eq!(
        answer(&plain, routines).await,
        answer(&jammi, routines).await
    );
    let added = "SELECT routine_name, count(*) AS n FROM information_schema.routines \
                 WHERE routine_name IN ('l2_distance', 'vector_search', 'vector_search_batch') \
                 GROUP BY routine_name ORDER BY routine_name";
    let ours = answer(&jammi, added).await;
    assert!(
        !ours.contains("| 2 "),
        "each added function is listed once: {ours}"
    );
    assert!(ours.contains("l2_distance"), "{ours}");
    // The searches are relations, planned by jammi's relation planner: not functions.
    assert!(!ours.contains("vector_search"), "{ours}");
    assert_eq!(
        jammi.state().expr_planners().len(),
        plain.state().expr_planners().len()
    );
    assert_eq!(
        jammi.state().relation_planners().len(),
        plain.state().relation_planners().len() + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn long_array_literals_plan_as_make_array() {
    let floats: Vec<String> = (0..40).map(|i| format!("{:?}", i as f64 * -0.37)).collect();
    let ints: Vec<String> = (0..40).map(|i| (i * 7 - 90).to_string()).collect();
    let mut with_null = floats.clone();
    with_null[5] = "NULL".into();
    let mut statements = Vec::new();
    for list in [floats.join(", "), ints.join(", "), with_null.join(", ")] {
        statements.push(format!("SELECT [{list}]"));
        statements.push(format!("SELECT [{list}] AS x, arrow_typeof([{list}]) AS t"));
        statements.push(format!(
            "SELECT [{list}] AS k, count(*) AS n FROM (VALUES (1), (2)) AS v(a) GROUP BY [{list}]"
        ));
        statements.push(format!(
            "SELECT make_array({list}) AS k FROM (VALUES (1)) AS v(a) ORDER BY [{list}]"
        ));
    }
    same_answers(&statements).await;
    // A view and a table built from the literal keep make_array's name and nullability.
    let (plain, jammi) = pair().await;
    let list = floats.join(", ");
    for ctx in [&plain, &jammi] {
        answer(ctx, &format!("CREATE VIEW v AS SELECT [{list}]")).await;
        answer(ctx, &format!("CREATE TABLE t AS VALUES ([{list}])")).await;
    }
    for sql in ["SELECT * FROM v", "SELECT * FROM t"] {
        assert_eq!(
            answer(&plain, sql).await,
            answer(&jammi, sql).await,
            "{sql}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_that_overrides_another_name_keeps_it_after_register() {
    // `upper` also answering to `date_trunc` (the name of another built-in, which has an
    // alias of its own): register rebuilds the session's function table, and each name must
    // stay bound to the function it was bound to.
    let ctx = SessionContext::new();
    let upper = datafusion::functions::string::upper();
    ctx.register_udf(upper.as_ref().clone().with_aliases(["date_trunc"]));
    let sql =
        "SELECT date_trunc('jammi') AS v, datetrunc('day', TIMESTAMP '2026-11-30T10:11:12') AS d";
    let before = answer(&ctx, sql).await;
    assert!(before.contains("JAMMI"), "{before}");
    jammi_db::register(&ctx, &StorageRegistry::new(), None)
        .await
        .unwrap();
    assert_eq!(answer(&ctx, sql).await, before);
}
