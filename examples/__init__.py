"""Runnable examples and their data generators (run from the repository root: ``python -m examples.demo``)."""
