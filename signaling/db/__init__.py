"""Persistence: SQLAlchemy 2 async models and the engine; the schema is managed by Alembic."""
