import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jammi_ai import Database

DIMS = 8


def vector(i: int) -> list[float]:
    """A distinct unit-ish vector per row, as the Rust tests make them."""
    rng = np.random.default_rng(i)
    v = rng.standard_normal(DIMS).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def papers(n: int = 50) -> pa.Table:
    """Rows with every type a round trip must keep: strings, nulls, lists, timestamps and
    FixedSizeList vectors."""
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "title": pa.array([f"paper {i}" if i % 7 else None for i in range(n)], pa.string()),
            "tags": pa.array([[f"t{i % 3}", "x"] if i % 5 else [] for i in range(n)], pa.list_(pa.string())),
            "published": pa.array(
                [dt.datetime(2026, 1, 1) + dt.timedelta(days=i) for i in range(n)], pa.timestamp("us")
            ),
            "score": pa.array([i / n if i % 4 else None for i in range(n)], pa.float64()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate([vector(i) for i in range(n)]), pa.float32()), DIMS
            ),
        }
    )


@pytest.fixture
def papers_file(tmp_path):
    path = tmp_path / "data" / "papers.parquet"
    path.parent.mkdir()
    pq.write_table(papers(), path)
    return path


@pytest.fixture
def db(tmp_path):
    with Database(str(tmp_path / "root")) as d:
        yield d


@pytest.fixture
def table(db):
    """A result table written from pyarrow: its name."""
    m = db.write_table(
        papers(), source="papers", task="emb", model="m", key_column="id", vector_column="embedding"
    )
    return m["table"]


def s3_env():
    """The loopback S3 server of scripts/test-servers.sh, or None."""
    endpoint = os.environ.get("JAMMI_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
