"""Contracts: named, versioned, deterministic rules that decide what the ledger records."""
