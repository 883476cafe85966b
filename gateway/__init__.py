"""The Patio ledger gateway: a FastAPI service in front of the ledger."""
