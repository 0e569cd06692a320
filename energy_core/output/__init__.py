"""Output: metric keys, metric dictionaries, the run record and the end-of-run summary."""
