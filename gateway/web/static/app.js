// What every page shares: strings, the session key, calls to the JSON API, the live
// stream, and the pinned log key with its warning.

const catalog = JSON.parse(document.getElementById("catalog").textContent);
const TOKEN = "patio.token";
const LOG_KEY = "patio.logKey";

/** The string `key` of the page's language, with {name} placeholders filled in. */
export function t(key, vars = {}) {
  const text = catalog[key];
  if (text === undefined) throw new Error(`no string ${key} in the catalog`);
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

export const lang = document.documentElement.lang;

/** An element with attributes and children; text goes in as text, never as markup. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// The key lives in sessionStorage (gone with the tab) unless the user asked to be remembered.
export const session = {
  token: () => sessionStorage.getItem(TOKEN) ?? localStorage.getItem(TOKEN),
  save(token, remember) {
    this.clear();
    (remember ? localStorage : sessionStorage).setItem(TOKEN, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    localStorage.removeItem(TOKEN);
  },
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = null;
  }
}

function headers(token = session.token()) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Call the JSON API (a JSON answer parsed, any other text as it is; `accept` asks for
 * another type); an RFC 9457 refusal becomes an ApiError carrying its detail. */
export async function api(path, { method = "GET", body, token, accept } = {}) {
  const init = { method, headers: headers(token) };
  if (accept !== undefined) init.headers.Accept = accept;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") ?? "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new ApiError(response.status, typeof data === "object" ? data : { detail: data });
    error.retryAfter = response.headers.get("retry-after");
    throw error;
  }
  return data;
}

/** Every item of a paged listing (`{items, next}`, docs/http-api.md), following `next`. */
export async function listAll(path, params = {}) {
  const items = [];
  let after = null;
  do {
    const query = new URLSearchParams({ ...params, limit: "1000", ...(after === null ? {} : { after }) });
    const page = await api(`${path}?${query}`);
    items.push(...page.items);
    after = page.next;
  } while (after !== null);
  return items;
}

let me = null; // one GET /v1/me per page load

/** Who the session key is (GET /v1/me), or null when signed out; sends to sign-in if asked. */
export async function whoAmI({ required = true } = {}) {
  if (!session.token()) {
    if (required) location.assign(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`);
    return null;
  }
  try {
    me ??= api("/v1/me");
    return await me;
  } catch (error) {
    me = null;
    if (error.status === 401) {
      session.clear();
      if (required) location.assign(`/signin?next=${encodeURIComponent(location.pathname)}`);
      return null;
    }
    throw error;
  }
}

/** Show a message in the page's status area (role=status or alert). */
export function say(node, text, kind = "info") {
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = !text;
}

/**
 * Follow a Server-Sent Events stream with the session key (EventSource cannot send an
 * Authorization header, so this reads it with fetch), resuming with Last-Event-ID.
 * Returns a function that stops it.
 */
export function follow(path, { onEvent, onState }) {
  let lastId = null;
  let stopped = false;
  let controller = null;
  const dispatch = (block) => {
    let event = "message";
    const data = [];
    for (const line of block.split(/\r\n|\r|\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (name === "event") event = value;
      else if (name === "data") data.push(value);
      else if (name === "id") lastId = value;
    }
    if (data.length) onEvent(event, JSON.parse(data.join("\n")));
  };
  (async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const init = { headers: headers(), signal: controller.signal };
        if (lastId) init.headers["Last-Event-ID"] = lastId;
        const response = await fetch(path, init);
        if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
        onState("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let match;
          while ((match = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
            dispatch(buffer.slice(0, match.index));
            buffer = buffer.slice(match.index + match[0].length);
          }
        }
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          onState("refused");
          return;
        }
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  })();
  return () => {
    stopped = true;
    controller?.abort();
  };
}

/** The log key pinned on first use: {key, at} from localStorage, or null. */
export function pinnedLogKey() {
  const stored = localStorage.getItem(LOG_KEY);
  return stored ? JSON.parse(stored) : null;
}

export function pinLogKey(key) {
  localStorage.setItem(LOG_KEY, JSON.stringify({ key, at: new Date().toISOString() }));
}

/** Pin the gateway's log key on first use; warn loudly on every page if it ever changes. */
async function checkLogKey() {
  const served = (await api("/v1/log-key")).trim();
  const pinned = pinnedLogKey();
  if (!pinned) {
    pinLogKey(served);
    return;
  }
  if (pinned.key === served) return;
  const banner = document.getElementById("logkey-warning");
  banner.replaceChildren(
    el("strong", {}, t("logkey.changed.title")),
    el("p", {}, t("logkey.changed.body", { at: pinned.at })),
    el("p", {}, t("logkey.pinned"), " ", el("code", {}, pinned.key)),
    el("p", {}, t("logkey.served"), " ", el("code", {}, served)),
    el("button", {
      type: "button",
      onclick: () => {
        if (confirm(t("logkey.changed.confirm"))) {
          pinLogKey(served);
          banner.hidden = true;
        }
      },
    }, t("logkey.changed.trust")),
  );
  banner.hidden = false;
}

async function header() {
  const signout = document.getElementById("signout");
  const signin = document.getElementById("signin-link");
  const who = document.getElementById("whoami");
  signout.addEventListener("click", () => {
    session.clear();
    location.assign("/signin");
  });
  const me = session.token() ? await whoAmI({ required: false }) : null;
  signin.hidden = Boolean(me);
  signout.hidden = !me;
  if (me) {
    who.textContent = me.admin
      ? t("session.admin")
      : me.communities === null ? t("session.audit") : t("session.reader", { communities: me.communities.join(", ") });
  }
}

/** Format watts as kW with the page's language. */
export function kw(watts, digits = 2) {
  if (watts === null || watts === undefined) return "—";
  return `${(watts / 1000).toLocaleString(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits })} kW`;
}

export function number(value, digits = 2) {
  return typeof value === "number" ? value.toLocaleString(lang, { maximumFractionDigits: digits }) : String(value);
}

export function ago(seconds) {
  if (seconds < 90) return t("age.seconds", { n: Math.max(0, Math.round(seconds)) });
  if (seconds < 5400) return t("age.minutes", { n: Math.round(seconds / 60) });
  if (seconds < 129600) return t("age.hours", { n: Math.round(seconds / 3600) });
  return t("age.days", { n: Math.round(seconds / 86400) });
}

export const ready = Promise.all([header(), checkLogKey()]).catch((error) => console.warn(error));
