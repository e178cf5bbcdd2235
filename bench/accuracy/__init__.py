"""Accuracy benchmarks: retrieval quality of trained models and levers (cross-validation, ablations, adaptation)."""
