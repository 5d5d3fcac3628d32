"""Benchmarks (`just bench`, `just bench-million`): not collected by pytest."""
