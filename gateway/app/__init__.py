"""The application: HTTP app, settings, composition root, command line."""
