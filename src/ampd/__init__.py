"""ampd: blockchain data extraction to Parquet, coordinated through PostgreSQL."""

__version__ = "0.1.0"
