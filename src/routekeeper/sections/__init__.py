"""Settings sections of state surfaces, one module per surface (family): a pydantic model per
section, composed into ``routekeeper.settings.Settings`` by one field each. Sections import
nothing from the rest of the package but ``sections.base``."""
