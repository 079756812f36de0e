"""Benchmarks: how fast training and its data path run."""
