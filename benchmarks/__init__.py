"""Benchmarks of pacx against its references (timm, the official MAE code): `python -m benchmarks.bench`."""
