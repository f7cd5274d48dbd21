"""Backbones with torchvision-compatible parameter names."""
