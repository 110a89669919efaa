"""Media files: fetch, probe, decode and encode them, and cut sources into clips (ingest, shots)."""
