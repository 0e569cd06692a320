"""Sampling: a background thread reads every device into a buffer; the training thread only takes marks."""
