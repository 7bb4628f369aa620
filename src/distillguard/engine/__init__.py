"""Where the work runs: an embedded DuckDB by default; Spark for provider scale."""
