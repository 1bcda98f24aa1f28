"""Alembic migrations; run them with ``charter db upgrade``."""
