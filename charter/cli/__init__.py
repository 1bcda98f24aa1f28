"""The ``charter`` command."""
