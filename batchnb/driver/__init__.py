"""The driver: plans a job once, runs its chunks on an engine, and writes the record as they finish."""
