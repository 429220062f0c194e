"""The durable record of a job (one sqlite file) and the snapshots every view reads from it."""
