"""Experiments: one module per task family (model + data + metric + the papers' defaults)."""
