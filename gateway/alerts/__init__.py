"""Alerts: rules evaluated on the readings' minutes, notifications, and their record on the log."""
