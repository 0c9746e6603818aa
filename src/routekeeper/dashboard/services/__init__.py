"""What the dashboard routes call: queries over the stores, no FastAPI."""
