"""The extraction engine: block ranges of a dataset into committed Parquet files."""
