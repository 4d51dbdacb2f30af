"""The pipeline node's parts: A (entry), B and C (stage), their streams and C's ledger."""
