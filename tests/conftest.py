pytest_plugins = ["routekeeper.testing.pytest_plugin"]
