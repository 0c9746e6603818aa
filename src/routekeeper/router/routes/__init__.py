"""The /v1 routes."""
