// Which readings are power and on which side of the meter: by the role each device's profile
// declares, as GET /v1/communities/{id}/latest sums them (the dashboard counts as the API).

const SCALE = { W: ["avg", 1], kW: ["avg", 1000], Wh: ["sum", 60] };

/** {reading name: role} of a device's declared profile (GET /v1/devices), as the API reads it. */
export function rolesOf(profile) {
  return Object.fromEntries(Object.entries(profile?.sensors ?? {}).map(([name, sensor]) => [name, sensor.role]));
}

/** Mean power over the minute in W, or null when the reading says nothing about power. */
export function averageWatts(reading) {
  const scale = reading && SCALE[reading.unit];
  if (!scale || typeof reading[scale[0]] !== "number") return null;
  const watts = reading[scale[0]] * scale[1];
  return Number.isFinite(watts) ? watts : null;
}

/**
 * Today's self-sufficiency, computed here from today's entries until the reports API
 * serves it: the share of consumption met by generation in the same minute,
 * sum(min(generation, consumption)) / sum(consumption), over the community's minutes.
 */
export class SelfSufficiency {
  constructor(since, roles) {
    this.since = since; // Date: local midnight
    this.roles = roles; // device id -> {reading name -> declared role}
    this.minutes = new Map(); // start -> {generation, consumption} in Wh
    this.seen = new Set(); // log tag ids counted, so a replayed event counts once
  }

  add(logTagId, payload) {
    if (this.seen.has(logTagId) || !payload?.readings || !payload.start) return;
    if (new Date(payload.start) < this.since) return;
    this.seen.add(logTagId);
    const hours = (payload.period_s ?? 60) / 3600;
    const minute = this.minutes.get(payload.start) ?? { generation: 0, consumption: 0 };
    const roles = this.roles.get(payload.device_id) ?? {};
    for (const [name, reading] of Object.entries(payload.readings)) {
      const which = roles[name];
      const watts = averageWatts(reading);
      if (which in minute && watts !== null) minute[which] += watts * hours;
    }
    this.minutes.set(payload.start, minute);
  }

  /** {ratio (0..1 or null), consumedWh, generatedWh} */
  get value() {
    let met = 0;
    let consumed = 0;
    let generated = 0;
    for (const { generation, consumption } of this.minutes.values()) {
      met += Math.min(generation, consumption);
      consumed += consumption;
      generated += generation;
    }
    return { ratio: consumed > 0 ? met / consumed : null, consumedWh: consumed, generatedWh: generated };
  }
}
