"""InstVL datasets: the Parquet shard format, its writer/reader, validation, inspection and InstVL-Synth."""
