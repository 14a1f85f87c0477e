"""mixlaw: critical mixture ratios for continual pre-training (CMR scaling law and beyond)."""

__version__ = "0.1.0"
