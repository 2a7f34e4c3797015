"""Evaluation runners: classification, rate-distortion, robustness."""
