"""Fixtures registered for every test; the helper modules define the classes."""
