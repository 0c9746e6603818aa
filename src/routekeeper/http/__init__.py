"""The HTTP application (FastAPI)."""
