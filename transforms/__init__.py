"""Composite PTransforms and the pure per-record functions behind them."""
