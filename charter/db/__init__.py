"""Database plumbing: ORM models, engine/session factory and migrations."""
