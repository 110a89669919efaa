"""Annotation engines: ingest, open-vocabulary detection, video tracking and VLM captioning."""
