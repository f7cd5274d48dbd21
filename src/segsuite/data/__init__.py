"""Datasets, transforms and the Lightning data module."""
