"""Durable state: the SQLite database and atomic file writes."""
