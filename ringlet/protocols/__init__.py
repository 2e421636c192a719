"""Secure protocols: one module per family, plain functions over shares and a Session.

Every docstring states rounds and bits sent per party per element; tests assert them exactly.
"""
