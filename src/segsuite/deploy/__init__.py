"""Deployable models: export-friendly forms of a network (`exportable`), the ONNX and TorchScript
writers and runners (`formats`), and the check of an exported file against PyTorch (`check`)."""
