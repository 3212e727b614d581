//! Quantised indexes (f16, i8, b1): each precision indexes real MiniLM vectors, reloads
//! from its sidecars and answers every search form with the exact distances of the rows it
//! returns; a hit's vector is the file's, never the index's lossy copy; a manifest naming
//! another precision than its graph file is reported, never served; bad options name
//! themselves.

use std::collections::HashMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float32Type, Float64Type, Int64Type};
use jammi_db::index::Quantization;
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::storage::CloudConfig;
use jammi_db::store::FileRole;

use crate::common::{list, memory_root, sample_corpus_path, search_sql, tempdir, vec_sql};

const K: usize = 10;

/// Every row's embedding of the repository's MiniLM slice, by id.
async fn corpus(s: &JammiSession) -> HashMap<i64, Vec<f32>> {
    let batches = s
        .sql("SELECT id, embedding FROM corpus")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = HashMap::new();
    for b in batches {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let vs = b.column(1).as_fixed_size_list();
        for i in 0..b.num_rows() {
            let v = vs.value(i);
            out.insert(
                ids.value(i),
                v.as_primitive::<Float32Type>().values().to_vec(),
            );
        }
    }
    out
}

/// A session on `root` with the MiniLM slice registered as `corpus`.
async fn session(root: &str) -> JammiSession {
    session_on(root, None).await
}

/// [`session`] on a cloud root with its server's settings.
async fn session_on(root: &str, cloud: Option<&CloudConfig>) -> JammiSession {
    let options = OpenOptions {
        cloud: cloud.cloned(),
        ..Default::default()
    };
    let s = JammiSession::open_with(root, options).await.unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE corpus STORED AS PARQUET LOCATION '{}'",
        sample_corpus_path().display()
    ))
    .await
    .unwrap();
    s
}

/// `t`, a result table of the slice's rows indexed at precision `q`.
async fn write_table(s: &JammiSession, t: &str, q: Quantization) {
    s.sql(&format!("SET jammi.quantization = '{q}'"))
        .await
        .unwrap();
    s.sql(&format!(
        "CREATE TABLE jammi.public.{t} AS SELECT id, section, embedding FROM corpus"
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    let m = s.describe_table(t).await.unwrap();
    assert_eq!(m.index.as_ref().unwrap().quantization, q);
    // A quantised graph keeps the exact vectors beside it, by key; f32 is the four siblings.
    let exact = m.file(FileRole::Vectors);
    let rows = m.index.as_ref().unwrap().vectors;
    match q {
        Quantization::F32 => assert!(exact.is_none(), "{m:?}"),
        _ => assert_eq!(exact.map(|f| f.size), Some(rows * 384 * 4), "{m:?}"),
    }
    // Only a quantised table's manifest needs the format that knows the `vectors` file.
    let format = if q == Quantization::F32 { 2 } else { 3 };
    assert_eq!(m.format_version, format, "{q}");
}

/// A query near the `i`-th row of the slice (by id), not equal to any row.
fn query(rows: &HashMap<i64, Vec<f32>>, i: usize) -> Vec<f32> {
    let mut ids: Vec<i64> = rows.keys().copied().collect();
    ids.sort_unstable();
    let (a, b) = (&rows[&ids[i]], &rows[&ids[i + 500]]);
    a.iter().zip(b).map(|(x, y)| 0.8 * x + 0.2 * y).collect()
}

/// `(id, _distance)` of every row of `batches` (the distance column as f64).
fn hits(batches: &[RecordBatch]) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let d = b.column_by_name("_distance").unwrap();
        for i in 0..b.num_rows() {
            let d = match d.as_primitive_opt::<Float32Type>() {
                Some(f) => f.value(i) as f64,
                None => d.as_primitive::<Float64Type>().value(i),
            };
            out.push((ids.value(i), d));
        }
    }
    out
}

/// Cosine distance of two vectors, as an exact search computes it.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    1.0 - dot / (na.sqrt() * nb.sqrt())
}

/// Every precision's table on `root`, searched in every form (from a new session when
/// `reload`, so the index is loaded from its sidecars).
pub(crate) async fn every_form_at_every_precision(
    root: &str,
    cloud: Option<&CloudConfig>,
    reload: bool,
) {
    let s = session_on(root, cloud).await;
    let rows = corpus(&s).await;
    for q in Quantization::ALL {
        let t = format!("q_{q}");
        write_table(&s, &t, q).await;
        let fresh = if reload {
            Some(session_on(root, cloud).await)
        } else {
            None
        };
        let s = fresh.as_ref().unwrap_or(&s);
        let mut overlap = 0;
        for i in [3, 77, 250, 420] {
            let v = query(&rows, i);
            let lit = vec_sql(&v);
            let exact = hits(
                &search_sql(
                    s,
                    &format!(
                        "SELECT id, _distance FROM vector_search('{t}', {lit}, {K}, 'exact=true')"
                    ),
                )
                .await
                .0,
            );
            let (b, stats) = search_sql(
                s,
                &format!("SELECT id, _distance FROM vector_search('{t}', {lit}, {K})"),
            )
            .await;
            assert_eq!(
                stats.mode.split('+').next(),
                Some("index"),
                "{q}: {stats:?}"
            );
            let got = hits(&b);
            assert_eq!(got.len(), K, "{q}");
            // `_distance` is the exact distance of each returned row, nearest first.
            for (id, d) in &got {
                let want = cosine(&v, &rows[id]);
                if q == Quantization::F32 {
                    // USearch's own (SIMD) distance.
                    assert!((*d as f32 - want).abs() < 1e-5, "{q}: row {id}");
                } else {
                    assert_eq!(*d as f32, want, "{q}: row {id}");
                }
            }
            assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "{q}: {got:?}");
            overlap += got
                .iter()
                .filter(|h| exact.iter().any(|e| e.0 == h.0))
                .count();

            // The same through a prepared `$1`.
            let p = s
                .prepare(&format!(
                    "SELECT id, _distance FROM vector_search('{t}', $1, {K})"
                ))
                .await
                .unwrap();
            let prepared = hits(&p.collect(vec![list(&v)]).await.unwrap());
            assert_eq!(prepared, got, "{q}: $1");

            // The ORDER BY rewrite returns the SQL function's own values.
            let ordered = hits(
                &s.sql(&format!(
                    "SELECT id, cosine_distance(embedding, {lit}) AS _distance \
                     FROM jammi.public.{t} ORDER BY _distance LIMIT {K}"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
            );
            assert_eq!(ordered.len(), K, "{q}: ORDER BY");
            for (id, d) in &ordered {
                let want: f64 = cosine_f64(&v, &rows[id]);
                assert!(
                    (d - want).abs() < 1e-6,
                    "{q}: ORDER BY row {id}: {d} vs {want}"
                );
            }

            // A hit's vector is the file's, bit for bit.
            let b = s
                .sql(&format!(
                    "SELECT id, embedding FROM vector_search('{t}', {lit}, 3)"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            for b in &b {
                let ids = b.column(0).as_primitive::<Int64Type>();
                let vs = b.column(1).as_fixed_size_list();
                for r in 0..b.num_rows() {
                    let got = vs.value(r);
                    let got = got.as_primitive::<Float32Type>().values();
                    assert_eq!(got, &rows[&ids.value(r)][..], "{q}: row {}", ids.value(r));
                }
            }
        }
        // Re-ranked by the exact vectors, every precision finds nearly all true neighbours.
        let recall = overlap as f64 / (4 * K) as f64;
        assert!(recall >= 0.9, "{q}: recall {recall}");

        // EXPLAIN says what the search will run.
        let plan = s
            .sql(&format!(
                "EXPLAIN SELECT id FROM vector_search('{t}', [{}], {K})",
                vec!["0.1"; 384].join(", ")
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
            .unwrap()
            .to_string();
        let want = format!(
            "quantization={q}, rescore=exact vectors of {}",
            K * q.default_oversample()
        );
        assert_eq!(text.contains(&want), q != Quantization::F32, "{q}: {text}");

        // A batch search re-ranks too.
        let batch = s
            .sql(&format!(
                "SELECT query_qid, id, _distance FROM vector_search_batch('{t}', \
                 (SELECT id AS qid, embedding FROM corpus ORDER BY id LIMIT 2), {K})"
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut n = 0;
        for b in &batch {
            let qid = b.column(0).as_primitive::<Int64Type>();
            for (r, (id, d)) in hits(std::slice::from_ref(b)).into_iter().enumerate() {
                let want = cosine(&rows[&qid.value(r)], &rows[&id]);
                let tolerance = if q == Quantization::F32 { 1e-5 } else { 0.0 };
                assert!((d as f32 - want).abs() <= tolerance, "{q}: batch row {id}");
                n += 1;
            }
        }
        assert_eq!(n, 2 * K, "{q}: batch");
    }
}

/// Cosine distance in f64, as DataFusion-side `cosine_distance` computes it.
fn cosine_f64(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    1.0 - dot / (na.sqrt() * nb.sqrt())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_precision_answers_every_search_form_with_exact_distances_on_a_local_root() {
    let dir = tempdir();
    every_form_at_every_precision(dir.path().to_str().unwrap(), None, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_precision_answers_every_search_form_with_exact_distances_in_memory() {
    every_form_at_every_precision(&memory_root("quantized"), None, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_rescoring_a_binary_index_gives_its_own_approximate_distances() {
    let dir = tempdir();
    let s = session(dir.path().to_str().unwrap()).await;
    let rows = corpus(&s).await;
    write_table(&s, "bits", Quantization::B1).await;
    let v = query(&rows, 9);
    let sql = |opts: &str| {
        format!(
            "SELECT id, _distance FROM vector_search('bits', {}, {K}{opts})",
            vec_sql(&v)
        )
    };
    let approx = hits(&search_sql(&s, &sql(", 'rescore=false'")).await.0);
    assert_eq!(approx.len(), K);
    // Hamming distances between sign bits: whole numbers, not the cosine of the rows.
    assert!(approx.iter().all(|(_, d)| d.fract() == 0.0), "{approx:?}");
    assert!(
        approx
            .iter()
            .any(|(id, d)| (*d as f32) != cosine(&v, &rows[id]))
    );
    // More candidates re-ranked never find farther rows.
    let few = hits(&search_sql(&s, &sql(", 'oversample=1'")).await.0);
    let many = hits(&search_sql(&s, &sql(", 'oversample=64'")).await.0);
    assert!(
        many.last().unwrap().1 <= few.last().unwrap().1,
        "{few:?} vs {many:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_precisions_and_oversampling_are_errors_naming_the_option() {
    let dir = tempdir();
    let s = session(dir.path().to_str().unwrap()).await;
    let e = s
        .sql("SET jammi.quantization = 'i4'")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("jammi.quantization") && e.contains("'i4'") && e.contains("b1"),
        "{e}"
    );
    for q in ["i8", "b1"] {
        let e = s
            .sql(&format!(
                "CREATE EXTERNAL TABLE bad_{q} STORED AS PARQUET LOCATION '{}' OPTIONS \
                 ('jammi.vector_column' 'embedding', 'jammi.metric' 'l2', \
                  'jammi.quantization' '{q}')",
                sample_corpus_path().display()
            ))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("jammi.quantization") && e.contains("l2"), "{e}");
    }
    write_table(&s, "eights", Quantization::I8).await;
    let e = s
        .sql(&format!(
            "SELECT id FROM vector_search('eights', {}, 3, 'oversample=0')",
            vec_sql(&[0.1; 384])
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("oversample") && e.contains("'0'"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_naming_another_precision_than_its_graph_is_reported_never_served() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let s = session(root).await;
    let rows = corpus(&s).await;
    write_table(&s, "halves", Quantization::F16).await;
    // The manifest now claims the f16 graph holds i8 vectors.
    let path = dir.path().join("halves.idx.manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"quantization\": \"f16\""), "{text}");
    std::fs::write(
        &path,
        text.replace("\"quantization\": \"f16\"", "\"quantization\": \"i8\""),
    )
    .unwrap();
    let s = session(root).await;
    let v = query(&rows, 40);
    let (b, stats) = search_sql(
        &s,
        &format!(
            "SELECT id, _distance FROM vector_search('halves', {}, {K})",
            vec_sql(&v)
        ),
    )
    .await;
    let reason = stats.fallback_reason.unwrap_or_default();
    assert_eq!(stats.mode, "exact", "{reason}");
    assert!(
        reason.contains("stores f16") && reason.contains("i8"),
        "{reason}"
    );
    // The exact answer, not the graph's.
    for (id, d) in hits(&b) {
        assert_eq!(d as f32, cosine(&v, &rows[&id]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_indexed_file_takes_its_precision_from_the_table_option() {
    let dir = tempdir();
    let file = dir.path().join("corpus.parquet");
    std::fs::copy(sample_corpus_path(), &file).unwrap();
    let s = JammiSession::open(dir.path().join("root").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE docs STORED AS PARQUET LOCATION '{}' OPTIONS \
         ('jammi.vector_column' 'embedding', 'jammi.quantization' 'i8')",
        file.display()
    ))
    .await
    .unwrap();
    let manifest = std::fs::read_to_string(dir.path().join("corpus.idx.manifest.json")).unwrap();
    assert!(manifest.contains("\"quantization\": \"i8\""), "{manifest}");
    let rows = corpus(&session(dir.path().join("r2").to_str().unwrap()).await).await;
    let v = query(&rows, 123);
    let (b, stats) = search_sql(
        &s,
        &format!(
            "SELECT id, _distance FROM vector_search('docs', {}, {K})",
            vec_sql(&v)
        ),
    )
    .await;
    assert_eq!(stats.mode, "index", "{stats:?}");
    let got = hits(&b);
    assert_eq!(got.len(), K);
    for (id, d) in got {
        assert_eq!(d as f32, cosine(&v, &rows[&id]), "row {id}");
    }
}

/// Every file under `dir` (relative names), recursively.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quantised_table_keeps_its_precision_through_insert_compaction_and_delete() {
    let dir = tempdir();
    let root = dir.path().join("root");
    let s = session(root.to_str().unwrap()).await;
    let rows = corpus(&s).await;
    let mut ids: Vec<i64> = rows.keys().copied().collect();
    ids.sort_unstable();
    let half = ids[ids.len() / 2];
    s.sql("SET jammi.quantization = 'i8'").await.unwrap();
    s.sql(&format!(
        "CREATE TABLE jammi.public.grows AS SELECT id, embedding FROM corpus WHERE id < {half}"
    ))
    .await
    .unwrap();
    // The session's setting is for new tables: an INSERT keeps the table's precision.
    s.sql("SET jammi.quantization = 'f16'").await.unwrap();
    s.sql(&format!(
        "INSERT INTO jammi.public.grows SELECT id, embedding FROM corpus WHERE id >= {half}"
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    let vectors_files = |dir: &std::path::Path| {
        files_under(dir)
            .into_iter()
            .filter(|f| f.ends_with(".idx.vectors"))
            .count()
    };
    let segment_manifests: Vec<String> = files_under(&root)
        .into_iter()
        .filter(|f| f.contains("segments/") && f.ends_with(".idx.manifest.json"))
        .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
        .collect();
    assert_eq!(vectors_files(&root), 2, "{segment_manifests:?}");
    let v = query(&rows, 60);
    let sql = format!(
        "SELECT id, _distance FROM vector_search('grows', {}, {K})",
        vec_sql(&v)
    );
    let before = hits(&search_sql(&s, &sql).await.0);
    let report = s.compact("grows", &Default::default()).await.unwrap();
    assert_eq!(
        (report.segments_before, report.segments_after),
        (2, 1),
        "{report:?}"
    );
    let m = s.describe_table("grows").await.unwrap();
    assert_eq!(m.index.unwrap().quantization, Quantization::I8);
    // Re-ranked by the exact vectors, the answer is the same row for row, distance for distance.
    let after = hits(&search_sql(&s, &sql).await.0);
    for (id, d) in &after {
        assert_eq!(*d as f32, cosine(&v, &rows[id]), "row {id}");
    }
    let overlap = after
        .iter()
        .filter(|a| before.iter().any(|b| b.0 == a.0))
        .count();
    assert!(overlap >= K - 1, "{before:?} vs {after:?}");
    s.delete_table("grows").await.unwrap();
    assert_eq!(vectors_files(&root), 0, "{:?}", files_under(&root));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_exact_vectors_file_of_the_same_size_is_never_used() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let s = session(root).await;
    let rows = corpus(&s).await;
    write_table(&s, "eights", Quantization::I8).await;
    // Same size, other bytes: the first vector's values swapped for the second's.
    let path = dir.path().join("eights.idx.vectors");
    let mut bytes = std::fs::read(&path).unwrap();
    let (a, b) = bytes.split_at_mut(384 * 4);
    a.swap_with_slice(&mut b[..384 * 4]);
    std::fs::write(&path, &bytes).unwrap();
    let s = session(root).await;
    let v = query(&rows, 10);
    let (b, stats) = search_sql(
        &s,
        &format!(
            "SELECT id, _distance FROM vector_search('eights', {}, {K})",
            vec_sql(&v)
        ),
    )
    .await;
    let reason = stats.fallback_reason.unwrap_or_default();
    assert_eq!(stats.mode, "exact", "{reason}");
    assert!(reason.contains("eights.idx.vectors"), "{reason}");
    for (id, d) in hits(&b) {
        assert_eq!(d as f32, cosine(&v, &rows[&id]));
    }
}

/// A first search whose candidates' ranges would cover most of a remote table's
/// exact-vectors file (a binary index's many candidates) downloads the file once, as its
/// local copy, and reads no ranges of it; the next search asks the store for nothing.
#[tokio::test(flavor = "multi_thread")]
async fn many_candidates_download_the_exact_vectors_once_instead_of_their_ranges() {
    let root = memory_root("b1-copy");
    let s = JammiSession::open(&root).await.unwrap();
    // A name of its own (the cache keys copies by table), so no earlier run's copy is in
    // the shared cache directory.
    let nanos = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .as_nanos();
    let t = format!("bits_{nanos}");
    let start = 0;
    let spec = jammi_db::store::TableSpec {
        name: Some(t.clone()),
        vector_column: Some("embedding".into()),
        index: jammi_db::index::IndexParams {
            quantization: Quantization::B1,
            ..Default::default()
        },
        ..Default::default()
    };
    let batch = crate::common::sample_batch(start, 2000, 64);
    let m = s
        .result_store()
        .write_batches(&spec, crate::common::sample_schema(64), vec![batch])
        .await
        .unwrap();
    assert!(m.file(FileRole::Vectors).is_some(), "{m:?}");

    // A new session on the same in-process store: nothing of the table is loaded.
    let options = OpenOptions {
        registry: Some(s.registry().clone()),
        ..Default::default()
    };
    let s = JammiSession::open_with(&root, options).await.unwrap();
    let q = vec_sql(&crate::common::sample_vector(start + 7, 64));
    let sql = format!("SELECT id, _distance FROM vector_search('{t}', {q}, {K})");
    let before = s.registry().request_counts();
    let (first, stats) = search_sql(&s, &sql).await;
    let requests = s.registry().request_counts().since(&before);
    assert_eq!(stats.mode, "index", "{:?}", stats.fallback_reason);
    assert_eq!(hits(&first)[0].0, start + 7);
    // The manifest, rowmap, graph and the whole exact-vectors file (GETs), the HEADs of the
    // Parquet file and of the vectors, and one ranged read: the hits' rows. Reading the
    // 160 candidates' vectors as ranges would be 160 more.
    assert_eq!(requests.get_range, 1, "{requests:?}");
    assert_eq!((requests.get, requests.head), (4, 2), "{requests:?}");

    let before = s.registry().request_counts();
    let (again, _) = search_sql(&s, &sql).await;
    let requests = s.registry().request_counts().since(&before);
    assert_eq!(hits(&again), hits(&first));
    assert_eq!((requests.get, requests.get_range), (0, 0), "{requests:?}");
}
