"""Test doubles and sample-data helpers that ship with the package."""
