"""The routekeeper command line."""
