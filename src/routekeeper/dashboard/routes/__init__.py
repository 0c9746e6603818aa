"""Dashboard API routes, mounted under /api."""
