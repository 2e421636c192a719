"""Serving a private model: long-running party processes answering client queries."""
