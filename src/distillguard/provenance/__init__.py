"""Proof of copying: keyed output watermarks, a radioactivity test, black-box comparison.

Submodules import torch/transformers lazily; importing this package stays cheap.
"""
