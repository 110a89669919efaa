"""Prefect flows that sequence and map the library steps; the only place that imports prefect."""
