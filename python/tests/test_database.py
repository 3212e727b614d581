"""The Database API: sources, SQL, results, result tables, search, errors."""

import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jammi_ai
from jammi_ai import Database
from conftest import DIMS, papers, vector


def test_the_guides_three_lines_run_on_a_local_root(tmp_path, papers_file):
    db = Database(str(tmp_path / "root"))
    db.add_source("papers", url=str(papers_file), format="parquet")
    rows = db.sql("SELECT id, title FROM papers.public.papers LIMIT 10").to_pylist()
    assert len(rows) == 10
    assert rows[1] == {"id": 1, "title": "paper 1"}
    db.close()


def test_the_default_root_is_the_clis(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with Database() as db:
        assert db.root == str(tmp_path / "jammi")
    assert (tmp_path / "jammi").is_dir()


def test_a_closed_database_refuses_every_call(tmp_path):
    with Database(str(tmp_path)) as db:
        result = db.sql("SELECT 1 AS one")
    assert db.closed
    with pytest.raises(jammi_ai.ClosedError, match="closed"):
        db.sql("SELECT 1")
    with pytest.raises(jammi_ai.ClosedError):
        db.list_tables()
    # What was returned before stays readable.
    assert result.to_pylist() == [{"one": 1}]


def test_sources_are_listed_removed_and_named_once(db, papers_file):
    db.add_source("papers", url=str(papers_file))
    [s] = db.list_sources()
    assert s["name"] == "papers" and s["table"] == "papers.public.papers"
    assert s["format"] == "parquet"
    with pytest.raises(jammi_ai.AlreadyExistsError, match="papers"):
        db.add_source("papers", url=str(papers_file))
    db.remove_source("papers")
    assert db.list_sources() == []
    with pytest.raises(jammi_ai.NotFoundError, match="papers"):
        db.remove_source("papers")
    # The file itself is untouched.
    assert pq.read_table(papers_file).num_rows == 50


def test_a_bad_url_raises_invalid_url_naming_it(db):
    with pytest.raises(jammi_ai.InvalidUrlError, match="ftp://host/x.parquet"):
        db.add_source("x", url="ftp://host/x.parquet")
    with pytest.raises(jammi_ai.InvalidUrlError):
        Database("s3://")


def test_an_unknown_option_key_raises_option_error_naming_it(db, papers_file, tmp_path):
    with pytest.raises(jammi_ai.OptionError, match="aws.no_such_key"):
        db.add_source("x", url="s3://bucket/x.parquet", options={"aws.no_such_key": "1"})
    with pytest.raises(jammi_ai.OptionError, match="'colour'"):
        db.add_source("x", url=str(papers_file), options={"colour": "red"})
    with pytest.raises(jammi_ai.OptionError, match="'region'"):
        Database(str(tmp_path), storage_options={"region": "eu"})
    # A cloud key for a local root.
    with pytest.raises(jammi_ai.OptionError, match="aws.region"):
        Database(str(tmp_path), storage_options={"aws.region": "eu-west-1"})


def test_an_option_error_never_shows_a_secret_value(db):
    secret = "s3cr3t-VALUE-never-shown"
    with pytest.raises(jammi_ai.OptionError) as e:
        db.add_source(
            "x", url="gs://bucket/x.parquet", options={"aws.secret_access_key": secret}
        )
    assert secret not in str(e.value)
    with pytest.raises(TypeError) as e:
        db.add_source("x", url="s3://bucket/x.parquet", options={"aws.secret_access_key": [secret]})
    assert secret not in str(e.value)


def test_credentials_of_an_unknown_source_raise_not_found(db):
    with pytest.raises(jammi_ai.NotFoundError, match="nope"):
        db.set_source_credentials("nope", {"aws.region": "us-east-1"})


def test_results_round_trip_through_pyarrow_with_types_intact(db, papers_file):
    db.add_source("papers", url=str(papers_file))
    got = db.sql("SELECT * FROM papers.public.papers ORDER BY id").to_arrow()
    want = papers()
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        g, w = got.schema.field(name).type, want.schema.field(name).type
        if pa.types.is_string(w):
            # DataFusion reads Parquet strings as views.
            assert pa.types.is_string(g) or pa.types.is_large_string(g) or pa.types.is_string_view(g)
        elif pa.types.is_list(w):
            assert pa.types.is_list(g) or pa.types.is_large_list(g) or pa.types.is_list_view(g)
        else:
            assert g == w, name
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_results_round_trip_through_pandas_with_nulls_and_timestamps(db, papers_file):
    db.add_source("papers", url=str(papers_file))
    df = db.sql("SELECT id, title, published, score, embedding FROM papers.public.papers ORDER BY id").to_pandas()
    assert str(df["published"].dtype).startswith("datetime64")
    assert df["title"][1] == "paper 1" and pd.isna(df["title"][0])
    assert np.isnan(df["score"][0]) and df["score"][1] == pytest.approx(1 / 50)
    assert np.allclose(np.asarray(df["embedding"][3], dtype=np.float32), vector(3))


def test_other_libraries_read_a_result_through_the_arrow_stream(db):
    r = db.sql("SELECT * FROM (VALUES (1, 'a'), (2, NULL)) AS t(n, s) ORDER BY n")
    assert pa.table(r).to_pylist() == [{"n": 1, "s": "a"}, {"n": 2, "s": None}]
    assert r.schema.names == ["n", "s"] and r.columns == ["n", "s"]
    pl = pytest.importorskip("polars")
    assert pl.DataFrame(r)["n"].to_list() == [1, 2]
    assert r.to_polars()["s"].to_list() == ["a", None]
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql("SELECT sum(n) FROM r").fetchall() == [(3,)]


def test_a_reader_streams_batches(db):
    reader = db.sql("SELECT * FROM generate_series(1, 100000) AS t(v)").to_reader()
    total = sum(b.num_rows for b in reader)
    assert total == 100000


def test_show_repr_and_explain(db, capsys):
    r = db.sql("SELECT 41 + 1 AS answer")
    r.show()
    assert "answer" in capsys.readouterr().out
    assert "42" in repr(r)
    plan = r.explain()
    assert "physical_plan" in plan
    assert "output_rows" in r.explain(analyze=True)


def test_parameters_bind_numbers_strings_and_names(db):
    assert db.sql("SELECT $1 + 1 AS x", [41]).to_pylist() == [{"x": 42}]
    assert db.sql("SELECT $1 AS s, $2 AS f", ("hi", 0.5)).to_pylist() == [{"s": "hi", "f": 0.5}]
    assert db.sql("SELECT $a * 2 AS y", {"a": 4}).to_pylist() == [{"y": 8}]


def test_a_parameter_of_the_wrong_type_raises_type_error_naming_it(db):
    with pytest.raises(TypeError, match=r"\$2"):
        db.sql("SELECT $1, $2", [1, object()])
    with pytest.raises(TypeError, match="params"):
        db.sql("SELECT $1", "not a list")


def test_bad_sql_raises_query_error(db):
    with pytest.raises(jammi_ai.QueryError, match="no_such_table"):
        db.sql("SELECT * FROM no_such_table").to_arrow()


def test_ddl_and_dml_run_at_the_call(db):
    db.sql("CREATE TABLE t (a INT)")
    db.sql("INSERT INTO t VALUES (1), (2), (3)")  # not read: it ran anyway
    assert db.sql("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 3}]


def test_write_table_search_and_describe(db, table):
    assert db.list_tables() == [table]
    m = db.describe_table(table)
    assert m["rows"] == 50 and m["index"]["dimensions"] == DIMS
    hits = db.search(table, vector(7), k=3).to_pylist()
    assert hits[0]["id"] == 7 and hits[0]["_distance"] == pytest.approx(0.0, abs=1e-5)
    assert [h["_distance"] for h in hits] == sorted(h["_distance"] for h in hits)


@pytest.mark.parametrize(
    "as_vector",
    [
        lambda v: v,
        lambda v: tuple(v),
        lambda v: np.asarray(v, dtype=np.float32),
        lambda v: np.asarray(v, dtype=np.float64),
        lambda v: pa.array(v, pa.float32()),
    ],
    ids=["list", "tuple", "numpy32", "numpy64", "pyarrow"],
)
def test_a_query_vector_can_be_any_array(db, table, as_vector):
    # Exact, so the answer depends on the conversion alone, not on the graph's build order.
    hits = db.search(table, as_vector(vector(11)), k=1, exact=True).to_pylist()
    assert hits[0]["id"] == 11 and hits[0]["_distance"] < 1e-6


@pytest.mark.parametrize("precision", ["f16", "i8", "b1"])
def test_a_quantised_table_returns_exact_distances_and_its_files_vectors(db, precision):
    m = db.write_table(
        papers(), source="papers", task="emb", model="q", key_column="id",
        vector_column="embedding", quantization=precision,
    )
    t = m["table"]
    assert db.describe_table(t)["index"]["quantization"] == precision
    q = (np.asarray(vector(7)) * 0.9 + np.asarray(vector(8)) * 0.1).tolist()
    exact = db.search(t, q, k=5, exact=True).to_pylist()
    got = db.search(t, q, k=5, oversample=10).to_pylist()
    # Re-ranked by the exact vectors: the exact search's rows and distances.
    assert [h["id"] for h in got] == [h["id"] for h in exact]
    assert [h["_distance"] for h in got] == pytest.approx([h["_distance"] for h in exact], abs=1e-6)
    # A hit's vector is the one written, not the quantised graph's copy.
    assert got[0]["embedding"] == papers()["embedding"][got[0]["id"]].as_py()
    approx = db.search(t, q, k=5, rescore=False).to_pylist()
    assert len(approx) == 5
    with pytest.raises(jammi_ai.InvalidInputError, match="oversample"):
        db.search(t, q, k=5, oversample=0)
    with pytest.raises(jammi_ai.InvalidInputError, match="jammi.quantization"):
        db.write_table(papers(), source="p", task="e", model="m", vector_column="embedding", quantization="q4")


def test_search_options_filter_columns_and_exact(db, table):
    hits = db.search(table, vector(7), k=5, filter="id > 20", columns=["id"], exact=True).to_pylist()
    assert len(hits) == 5 and all(h["id"] > 20 for h in hits)
    assert set(hits[0]) == {"id", "_distance"}
    near = db.search(table, vector(7), k=5, ef_search=128).to_pylist()
    assert near[0]["id"] == 7


def test_a_vector_of_the_wrong_dimensions_or_nan_raises_invalid_input(db, table):
    with pytest.raises(jammi_ai.InvalidInputError, match="dimension"):
        db.search(table, [0.1, 0.2, 0.3], k=3).to_arrow()
    with pytest.raises(jammi_ai.InvalidInputError, match="NaN"):
        db.search(table, [float("nan")] * DIMS, k=3).to_arrow()
    with pytest.raises(TypeError, match="vector"):
        db.search(table, "0.1, 0.2", k=3)


def test_a_bound_vector_parameter_searches_like_search(db, table):
    by_sql = db.sql(
        f"SELECT id, _distance FROM vector_search('{table}', $1, 4)", [np.asarray(vector(9), np.float32)]
    ).to_pylist()
    by_api = db.search(table, vector(9), k=4, columns=["id"]).to_pylist()
    assert by_sql == by_api


def test_repeated_searches_reuse_the_plan_and_see_a_replaced_table(db, table):
    # The same search with new vectors (one plan, bound per call) answers each vector.
    for i in (3, 17, 41):
        assert db.search(table, vector(i), k=1).to_pylist()[0]["id"] == i
        bound = db.sql(f"SELECT id FROM vector_search('{table}', $1, 1)", [vector(i)])
        assert bound.to_pylist() == [{"id": i}]
        assert bound.columns == ["id"] and bound.schema.field("id").type == pa.int64()
        assert "VectorSearchExec" in bound.explain()
    # A table deleted and written again under the same name is searched anew.
    db.delete_table(table)
    shifted = papers().set_column(0, "id", pa.array(range(1000, 1050), pa.int64()))
    db.write_table(
        shifted, source="papers", task="emb", model="m", key_column="id", vector_column="embedding", name=table
    )
    assert db.search(table, vector(3), k=1).to_pylist()[0]["id"] == 1003
    assert db.sql(f"SELECT id FROM vector_search('{table}', $1, 1)", [vector(3)]).to_pylist() == [{"id": 1003}]


def test_a_batch_search_equals_its_queries_one_by_one(db, table):
    queries = np.asarray([vector(i) for i in (3, 14, 15, 92 % 50)], dtype=np.float32)
    rows = db.search_batch(table, queries, k=3, columns=["id"]).to_pylist()
    for i, q in enumerate(queries):
        mine = [r["id"] for r in sorted((r for r in rows if r["query_index"] == i), key=lambda r: r["_rank"])]
        assert mine == [h["id"] for h in db.search(table, q, k=3).to_pylist()]
    # A list of lists is the same batch.
    again = db.search_batch(table, queries.tolist(), k=3, columns=["id"]).to_pylist()
    assert sorted((r["query_index"], r["id"]) for r in again) == sorted((r["query_index"], r["id"]) for r in rows)


@pytest.mark.parametrize("kind", ["reader", "pandas", "polars", "result", "result_reader"])
def test_write_table_takes_any_arrow_data(db, papers_file, kind):
    data = papers()
    if kind == "reader":
        data = pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=7))
    elif kind == "pandas":
        data = data.to_pandas()
    elif kind == "polars":
        pl = pytest.importorskip("polars")
        data = pl.from_arrow(data)
    else:
        db.add_source("papers", url=str(papers_file))
        data = db.sql("SELECT * FROM papers.public.papers WHERE id < 40")
        if kind == "result_reader":
            # Read back through pyarrow's reader: the stream is pulled from the write's thread.
            data = data.to_reader()
    m = db.write_table(data, source="src", task="emb", model="m", key_column="id", vector_column="embedding")
    assert m["rows"] == (40 if kind.startswith("result") else 50)
    assert db.search(m["table"], vector(5), k=1).to_pylist()[0]["id"] == 5


def test_write_table_refuses_what_is_not_arrow_data(db):
    with pytest.raises(TypeError, match="Arrow data"):
        db.write_table({"id": [1]}, source="s", task="t", model="m")
    with pytest.raises(jammi_ai.InvalidInputError, match="metric"):
        db.write_table(papers(), source="s", task="t", model="m", vector_column="embedding", metric="manhattan")


def test_delete_table_and_recover(db, table):
    report = db.recover(dry_run=True)
    assert report["removed_objects"] == [] and report["committed_tables"] == 1
    db.delete_table(table)
    assert db.list_tables() == []
    with pytest.raises(jammi_ai.NotFoundError):
        db.describe_table(table)


def test_index_builds_draw_no_bar_when_stderr_is_not_a_terminal(db, capfd):
    db.write_table(papers(), source="s", task="t", model="m", vector_column="embedding")
    assert "indexing" not in capfd.readouterr().err


# A cross join of 10^10 pairs: minutes of work, unless something stops it.
ENDLESS = "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b WHERE a.value + b.value = 3"
# Seconds of work.
SLOW = "SELECT count(*) FROM generate_series(1, 40000) a, generate_series(1, 40000) b WHERE a.value + b.value = 3"


def test_two_threads_run_queries_at_once(db):
    """The GIL is released while a query runs: another thread's query runs meanwhile. (Were
    the GIL held, the main thread could only finish its query after the slow one ended.)"""
    ended = {}

    def slow():
        db.sql(SLOW).to_arrow()
        ended["slow"] = time.monotonic()

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    assert db.sql("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    quick_end = time.monotonic()
    t.join()
    assert ended["slow"] - quick_end > 0.5, "the quick query waited for the slow one"


def test_ctrl_c_interrupts_a_long_query(db):
    import _thread

    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        db.sql(ENDLESS).to_arrow()
    assert time.monotonic() - start < 60, "the query ran on after Ctrl-C"


def test_append_update_and_delete_change_a_table_as_versions(db, table):
    more = papers(60).slice(50)
    v = db.append(table, more)
    assert (v["version"], v["rows"], v["rows_added"], v["segments"]) == (1, 60, 10, 2)
    # The appended rows are scanned and searched at once.
    assert db.sql(f'SELECT count(*) AS n FROM jammi.public."{table}"').to_pylist() == [{"n": 60}]
    hits = db.search(table, vector(55), k=1).to_pylist()
    assert hits[0]["id"] == 55
    db.sql(f'DELETE FROM jammi.public."{table}" WHERE id = 55').to_pylist()
    hits = db.search(table, vector(55), k=3).to_pylist()
    assert 55 not in [h["id"] for h in hits] and len(hits) == 3
    db.sql(f"UPDATE jammi.public.\"{table}\" SET title = 'edited' WHERE id = 7").to_pylist()
    rows = db.sql(f'SELECT title FROM jammi.public."{table}" WHERE id = 7').to_pylist()
    assert rows == [{"title": "edited"}]
    # The table as it was at version 1.
    n = db.sql(f'SELECT count(*) AS n FROM jammi.public."{table}@1"').to_pylist()
    assert n == [{"n": 60}]
    with pytest.raises(Exception, match="column 'id'"):
        db.append(table, pa.table({"id": pa.array(["x"])}))


def test_merge_upserts_changed_documents_by_key(db, table):
    """Rows whose key is in the table replace it (their new vectors are found at once, the
    old ones never again); new keys are inserted; all in one version."""
    changed = papers(55).slice(45)  # ids 45..54: 45..49 exist, 50..54 are new
    edited = changed.set_column(1, "title", pa.array([f"edited {i}" for i in range(45, 55)]))
    moved = pa.FixedSizeListArray.from_arrays(
        pa.array(np.concatenate([vector(i + 1000) for i in range(45, 55)]), pa.float32()), DIMS
    )
    edited = edited.set_column(5, "embedding", moved)
    assert db.merge(table, edited, on="id") == 10
    rows = db.sql(f'SELECT count(*) AS n FROM jammi.public."{table}"').to_pylist()
    assert rows == [{"n": 55}]
    assert db.search(table, vector(1047), k=1).to_pylist()[0]["id"] == 47
    old = db.search(table, vector(47), k=1, exact=True).to_pylist()[0]
    assert old["id"] != 47 or old["_distance"] > 1e-4
    titles = db.sql(f'SELECT title FROM jammi.public."{table}" WHERE id = 52').to_pylist()
    assert titles == [{"title": "edited 52"}]
    with pytest.raises(Exception, match="id = 3"):
        db.merge(table, pa.concat_tables([papers(4).slice(3), papers(4).slice(3)]), on=["id"])
    with pytest.raises(TypeError, match="on must be"):
        db.merge(table, edited, on=3)


def test_compact_keeps_the_answers_and_vacuum_removes_only_replaced_files(db, table, tmp_path):
    for start in (50, 60, 70):
        db.append(table, papers(start + 10).slice(start), auto_compact=False)
    db.sql(f'DELETE FROM jammi.public."{table}" WHERE id % 3 = 0').to_pylist()
    q = f'SELECT id FROM jammi.public."{table}" ORDER BY id'
    before = db.sql(q).to_pylist()
    near = db.search(table, vector(61), k=5, exact=True).to_pylist()
    r = db.compact(table)
    assert r["version"] == 5 and r["segments_after"] < r["segments_before"], r
    assert db.sql(q).to_pylist() == before
    assert db.search(table, vector(61), k=5, exact=True).to_pylist() == near
    user = tmp_path / "root" / f"{table}.jammi" / "segments" / "mine.parquet"
    user.write_bytes(b"a user's file")
    dry = db.vacuum(table, older_than="0s", dry_run=True)
    assert dry["removed"] and dry["versions_removed"] == [1, 2, 3, 4], dry
    done = db.vacuum(table, older_than="0s")
    assert sorted(done["removed"]) == sorted(dry["removed"])
    assert user.read_bytes() == b"a user's file"
    assert db.sql(q).to_pylist() == before
    with pytest.raises(ValueError, match="older_than"):
        db.vacuum(table, older_than="soon")


def test_small_appends_merge_as_their_tier_fills_unless_told_not_to(db, table):
    kept = db.append(table, papers(60).slice(50), auto_compact=False)
    assert kept["segments"] == 2, kept
    # The third small segment fills the tier: merged into one as the version after.
    landed = db.append(table, papers(70).slice(60))
    assert landed["segments"] == 3 and landed["rows"] == 70, landed
    latest = db.sql(f'SELECT count(*) AS n FROM jammi.public."{table}"').to_pylist()
    assert latest == [{"n": 70}]
    # Version 3 is the merge, of the same rows.
    merged = db.sql(f'SELECT count(*) AS n FROM jammi.public."{table}@3"').to_pylist()
    assert merged == [{"n": 70}]
    assert db.search(table, vector(65), k=1, exact=True).to_pylist()[0]["id"] == 65
    with pytest.raises(TypeError):
        db.append(table, papers(80).slice(70), auto_compact="no")
