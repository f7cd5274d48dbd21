"""Backbones with torchvision-compatible parameter names, all answering `base.Backbone`'s interface
(`forward(x) -> [stage features]`, described by `channels` and `strides`)."""
