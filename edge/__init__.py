"""The edge agent: sensor drivers, minute aggregation, signing, a durable outbox, transports."""
