"""jammi-db from Python: SQL over files on local disk, S3, GCS and Azure, result tables
with vector indexes, and vector search.

    from jammi_ai import Database
    db = Database()
    db.add_source("papers", url="s3://bucket/papers.parquet", format="parquet")
    db.sql("SELECT id, title FROM papers.public.papers LIMIT 10").to_pandas()
"""

from ._jammi_ai import (
    AlreadyExistsError,
    ClosedError,
    ConflictError,
    CorruptError,
    Database,
    FeatureNotEnabledError,
    InvalidInputError,
    InvalidUrlError,
    JammiError,
    NotFoundError,
    OptionError,
    QueryError,
    Result,
    StorageError,
    __version__,
)

__all__ = [
    "AlreadyExistsError",
    "ClosedError",
    "ConflictError",
    "CorruptError",
    "Database",
    "FeatureNotEnabledError",
    "InvalidInputError",
    "InvalidUrlError",
    "JammiError",
    "NotFoundError",
    "OptionError",
    "QueryError",
    "Result",
    "StorageError",
    "__version__",
]
