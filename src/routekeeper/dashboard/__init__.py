"""The operator dashboard: management API and UI."""
