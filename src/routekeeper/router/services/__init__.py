"""Router services (no HTTP framework here)."""
