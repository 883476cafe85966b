"""The anchor contract: its Solidity source, compile script and pinned artifact."""
