"""Replica lifecycle services (no HTTP framework here)."""
