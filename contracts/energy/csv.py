"""A report as CSV: one row per bucket and a final `total` row, unit-bearing headers.

Times are ISO 8601 local times with their UTC offset (so the repeated hour of an autumn DST
day is two distinct rows); energy in kWh and money in the tariff's currency, as the exact
decimal text of the JSON report; an empty cell where the JSON has null.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

ENERGY_COLUMNS = ("generated_kWh", "consumed_kWh", "grid_import_kWh", "grid_export_kWh", "net_kWh")


def render_csv(report: dict[str, Any]) -> str:
    """The buckets and total of a `patio-report/v1` dict as CSV text (RFC 4180, CRLF)."""
    currency = report["tariff"]["currency"] if report["tariff"] else None
    header = ["row", "start", "end", *ENERGY_COLUMNS]
    header += ["self_consumption_ratio", "self_sufficiency_ratio"]
    header += ["peak_demand_kW", "peak_demand_at", "peak_generation_kW", "peak_generation_at"]
    header += ["expected_minutes", "missing_minutes"]
    cost_keys = ("energy", "power_term", "fixed", "export_compensation", "total")
    if currency:
        header += [f"cost_{key}_{currency}" for key in cost_keys]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    period = report["period"]
    rows = [("bucket", row["start"], row["end"], row) for row in report["buckets"]]
    rows.append(("total", period["start"], period["end"], report["total"]))
    for kind, start, end, metrics in rows:
        line = [kind, start, end, *(metrics[column] for column in ENERGY_COLUMNS)]
        line += [metrics["self_consumption"]["ratio"], metrics["self_sufficiency"]["ratio"]]
        for name in ("peak_demand", "peak_generation"):
            peak = metrics[name]
            line += [peak["kW"], peak["at"]] if peak else [None, None]
        line += [metrics["expected_minutes"], metrics["missing_minutes"]]
        if currency:
            cost = metrics["cost"]
            energy = sum((Decimal(a) for a in cost["energy"].values()), Decimal(0))
            minor_unit = Decimal(1).scaleb(-report["tariff"]["minor_unit_digits"])
            line += [f"{energy.quantize(minor_unit):f}"]
            line += [cost.get("power_term"), cost.get("fixed")]
            line += [cost["export_compensation"], cost["total"]]
        writer.writerow(["" if cell is None else cell for cell in line])
    return out.getvalue()
