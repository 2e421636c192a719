"""Command-line interface: one thin module per command; the library does the work."""
