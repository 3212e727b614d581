"""The Python binding against raw baselines, each figure a ratio measured in the same run:

- warm p50 of `db.search(...)` and of `db.sql("... vector_search('t', $1, 10)", [q])` on
  the 60k x 384 MiniLM corpus (200 held-out queries, k = 10), against raw USearch's
  Python binding searching the very index file jammi-db wrote (`Index.restore(view=True)`);
- reading 1M rows into pyarrow (`db.sql("SELECT * ...").to_arrow()`) against
  `pyarrow.parquet.read_table` of the same file, for a result table (the same rows written
  by `db.write_table`) and for a source file pyarrow wrote (one row group).

Run (after building the package): python python/benches/bench_python.py
"""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from usearch.index import Index

from jammi_ai import Database

CORPUS = Path(__file__).resolve().parents[2].parent / "shared/data/debian-minilm/corpus.parquet"
QUERIES = 200
K = 10
PASSES = 3
READ_RUNS = 5
BIG_ROWS = 1_000_000


def p50(run, queries):
    times = []
    for _ in range(PASSES):
        for q in queries:
            start = time.perf_counter()
            run(q)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def search_figures(tmp):
    corpus = pq.read_table(CORPUS, columns=["id", "embedding"]).sort_by("id")
    queries = np.stack(corpus.slice(0, QUERIES).column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    base = corpus.slice(QUERIES)
    db = Database(str(tmp / "root"))
    start = time.perf_counter()
    m = db.write_table(
        base, source="debian", task="text_embedding", model="all-MiniLM-L6-v2", key_column="id", vector_column="embedding"
    )
    print(f"result table written in {time.perf_counter() - start:.1f} s")
    table = m["table"]
    raw = Index.restore(str(tmp / "root" / f"{table}.idx.usearch"), view=True)
    base_ids = base.column("id").to_numpy()

    sql = f"SELECT id, _distance FROM vector_search('{table}', $1, {K})"
    same = 0
    for q in queries:
        got = db.sql(sql, [q]).to_arrow().column("id").to_pylist()
        want = base_ids[raw.search(q, K).keys].tolist()
        same += got == want
    raw_p50 = p50(lambda q: raw.search(q, K), queries)
    search_p50 = p50(lambda q: db.search(table, q, K, columns=["id"]).to_arrow(), queries)
    sql_p50 = p50(lambda q: db.sql(sql, [q]).to_arrow(), queries)
    db.close()
    return raw_p50, search_p50, sql_p50, same


def read_pair(db, sql, path, n):
    """Median seconds of reading `sql` into pyarrow, and of `pq.read_table(path)`."""
    jammi, raw = [], []
    for _ in range(READ_RUNS):
        start = time.perf_counter()
        t = db.sql(sql).to_arrow()
        jammi.append(time.perf_counter() - start)
        assert t.num_rows == n
        start = time.perf_counter()
        t = pq.read_table(path)
        raw.append(time.perf_counter() - start)
        assert t.num_rows == n
    return statistics.median(jammi), statistics.median(raw)


def read_figures(tmp):
    n = BIG_ROWS
    rows = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "title": pa.array([f"row {i} of the one-million-row table" for i in range(n)]),
            "score": pa.array(np.random.default_rng(0).random(n)),
            "at": pa.array(np.datetime64("2026-01-01T00:00:00", "us") + np.arange(n).astype("timedelta64[s]")),
        }
    )
    path = tmp / "big.parquet"
    pq.write_table(rows, path)
    root = tmp / "root"
    db = Database(str(root))
    table = db.write_table(rows, source="bench", task="read", model="none", key_column="id")["table"]
    result = read_pair(db, f'SELECT * FROM jammi.public."{table}"', root / f"{table}.parquet", n)
    db.add_source("big", url=str(path))
    source = read_pair(db, "SELECT * FROM big.public.big", path, n)
    db.close()
    return result, source


def main():
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        raw_p50, search_p50, sql_p50, same = search_figures(tmp)
        (read_jammi, read_raw), (src_jammi, src_raw) = read_figures(tmp)
    ms = 1e3
    print()
    print("| measure | jammi_ai | baseline | ratio |")
    print("|---|---|---|---|")
    print(f"| hits equal to raw USearch on the same index file | {same}/{QUERIES} queries | | |")
    print(
        f"| warm p50 `db.search(t, q, 10, columns=['id']).to_arrow()` | {search_p50 * ms:.3f} ms "
        f"| raw USearch Python `index.search` {raw_p50 * ms:.3f} ms | {search_p50 / raw_p50:.2f}x |"
    )
    print(
        f"| warm p50 `db.sql(\"... vector_search(t, $1, 10)\", [q]).to_arrow()` | {sql_p50 * ms:.3f} ms "
        f"| raw USearch Python `index.search` {raw_p50 * ms:.3f} ms | {sql_p50 / raw_p50:.2f}x |"
    )
    print(
        f"| 1M-row result table into pyarrow, `db.sql('SELECT * ...').to_arrow()`, median of {READ_RUNS} "
        f"| {read_jammi * ms:.0f} ms | `pyarrow.parquet.read_table` {read_raw * ms:.0f} ms | {read_jammi / read_raw:.2f}x |"
    )
    print(
        f"| 1M-row source file (one row group) into pyarrow, median of {READ_RUNS} "
        f"| {src_jammi * ms:.0f} ms | `pyarrow.parquet.read_table` {src_raw * ms:.0f} ms | {src_jammi / src_raw:.2f}x |"
    )


if __name__ == "__main__":
    main()
