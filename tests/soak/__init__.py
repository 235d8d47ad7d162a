"""The chaos soak (``make soak``; docs/reliability.md, last section): many workers, faults, one verdict."""
