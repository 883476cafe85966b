"""Energy arithmetic shared by the gateway's reports and `patio report verify`.

Nothing here imports the gateway: an auditor recomputes a report with the same code.
Quantities are integers (mWh, mW) so that parts add up to totals exactly.
"""
