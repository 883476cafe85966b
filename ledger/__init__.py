"""Patio ledger core: canonical encoding, keys, RFC 9162 Merkle log, checkpoints, proofs."""
