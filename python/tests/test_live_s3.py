"""The guide's Python example against the S3 server on loopback (scripts/test-servers.sh),
credentials from the process environment. Skipped without JAMMI_TEST_S3_ENDPOINT."""

import uuid

import pytest

import jammi_ai
from jammi_ai import Database
from conftest import papers, s3_env, vector

pytestmark = pytest.mark.skipif(s3_env() is None, reason="no S3 server (JAMMI_TEST_S3_ENDPOINT)")


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in s3_env().items():
        monkeypatch.setenv(k, v)


def test_the_guides_python_example_reads_s3_with_credentials_from_the_environment(
    tmp_path, aws_env, monkeypatch
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    url = "s3://benchmarks/snapshots/2026/papers.parquet"
    # Put the file there through jammi-db itself (COPY to the bucket, same credentials).
    with Database(str(tmp_path / "writer")) as w:
        w.write_table(papers(), source="seed", task="t", model="m", name="seed")
        w.sql(f"COPY (SELECT * FROM jammi.public.seed) TO '{url}' STORED AS PARQUET")

    # The guide's lines, as written.
    db = Database()
    db.add_source("papers", url="s3://benchmarks/snapshots/2026/papers.parquet", format="parquet")
    result = db.sql("SELECT id, title FROM papers.public.papers LIMIT 10")

    rows = result.to_pylist()
    assert len(rows) == 10 and all(set(r) == {"id", "title"} for r in rows)
    assert db.sql("SELECT count(*) AS n FROM papers.public.papers").to_pylist() == [{"n": 50}]
    db.close()


def test_a_root_on_s3_with_explicit_storage_options(monkeypatch):
    # No ambient credentials: only the explicit keys can make this work.
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    env = s3_env()
    options = {
        "aws.endpoint": env["AWS_ENDPOINT_URL"],
        "aws.access_key_id": "testing",
        "aws.secret_access_key": "testing",
        "aws.region": "us-east-1",
        "aws.allow_http": True,
    }
    root = f"s3://jammi-49/py-{uuid.uuid4().hex}/"
    with Database(root, storage_options=options) as db:
        m = db.write_table(papers(), source="p", task="emb", model="m", key_column="id", vector_column="embedding")
        assert db.search(m["table"], vector(3), k=1).to_pylist()[0]["id"] == 3
        assert "testing" not in repr(db)
    with pytest.raises(jammi_ai.OptionError, match="aws.nope"):
        Database(root, storage_options={**options, "aws.nope": "x"})
