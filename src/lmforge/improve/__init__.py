"""Continuous improvement: error mining, review, incremental training with EWC, A/B analysis."""
