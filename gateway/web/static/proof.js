// Proof check: look up a log tag id or drop a bundle file, then verify it here, step by step.

import { api, el, number, pinnedLogKey, ready, say, session, t } from "./app.js";
import { backends } from "./crypto.js";
import { verifyBundle } from "./verify.js";

const status = document.getElementById("status");
const form = document.getElementById("lookup");
const input = document.getElementById("log-tag");
const drop = document.getElementById("drop");
const file = document.getElementById("bundle-file");
const result = document.getElementById("result");

function entryView(entry, extra = {}) {
  const payload = entry.payload ?? {};
  const rows = [
    [t("proof.device"), payload.device_id ?? extra.device_id ?? "—"],
    [t("proof.minute"), payload.start ?? payload.dataToStore?.datetime ?? "—"],
    [t("proof.contract"), entry.contract ?? "—"],
    [t("proof.received"), entry.received_at ?? "—"],
  ];
  if (extra.index !== undefined) rows.push([t("proof.index"), String(extra.index)]);
  if (extra.community_id) rows.push([t("proof.community"), extra.community_id]);
  const readings = payload.readings ?? (payload.dataToStore ? { [payload.dataToStore.sensor_id ?? "amount"]: { value: payload.dataToStore.amount } } : {});
  return el("section", { class: "entry", "aria-labelledby": "entry-title" },
    el("h2", { id: "entry-title" }, t("proof.entry")),
    el("dl", { class: "facts" }, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("div", { class: "scroll" }, el("table", { class: "readings" },
      el("caption", {}, t("proof.readings")),
      el("thead", {}, el("tr", {}, [t("proof.sensor"), t("proof.unit"), t("proof.values")].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, Object.entries(readings).map(([name, r]) => el("tr", {},
        el("th", { scope: "row" }, name),
        el("td", {}, r?.unit ?? ""),
        el("td", {}, Object.entries(r ?? {}).filter(([k]) => k !== "unit").map(([k, v]) => `${k} ${number(v, 4)}`).join(" · ")),
      ))),
    )),
  );
}

async function show(bundleData, extra = {}) {
  const pinned = pinnedLogKey();
  const outcome = await verifyBundle(bundleData, { pinnedLogKey: pinned?.key ?? "" });
  const used = await backends();
  const verdict = el("p", { id: "verdict", tabindex: "-1", class: `verdict ${outcome.valid ? "valid" : "invalid"}`, role: "status", dataset: { failed: outcome.failed ?? "" } },
    outcome.valid ? t("proof.valid") : t("proof.invalid", { check: t(`check.${outcome.failed}`) }));
  const steps = el("ol", { id: "steps", class: "steps" }, outcome.steps.map((step) =>
    el("li", { class: step.status, dataset: { check: step.check, status: step.status } },
      el("span", { class: "mark", "aria-hidden": "true" }, { ok: "✓", failed: "✗", skipped: "·" }[step.status]),
      el("strong", {}, t(`check.${step.check}`)), " ",
      el("span", { class: "state" }, t(`proof.step.${step.status}`)),
      step.detail ? el("code", { class: "detail" }, step.detail) : null,
    )));
  const anchors = outcome.bundle?.anchors ?? [];
  result.replaceChildren(...[
    verdict,
    outcome.message ? el("p", { class: "why" }, outcome.message) : null,
    el("h2", {}, t("proof.steps")),
    steps,
    el("p", { class: "note" }, t("proof.backends", { sha256: used.sha256, ed25519: used.ed25519 })),
    el("p", { class: "note" }, t("logkey.pinned"), " ", el("code", {}, pinned?.key ?? "—")),
    outcome.bundle ? entryView(outcome.bundle.entry, extra) : null,
    el("section", { class: "anchors" },
      el("h2", {}, t("proof.anchors")),
      anchors.length
        ? el("ul", {}, anchors.map((a) => el("li", {},
          t("proof.anchor_line", { chain: a.chainId, block: a.blockNumber ?? "—", size: a.treeSize }), " ",
          el("code", {}, a.txHash), a.contract ? [" ", t("proof.contract_at"), " ", el("code", {}, a.contract)] : null)))
        : el("p", {}, t("proof.no_anchors"))),
  ].filter(Boolean));
  result.hidden = false;
  // Keyboard and screen-reader users land on the verdict.
  result.querySelector("#verdict").focus();
}

async function lookUp(tag) {
  say(status, t("proof.fetching"));
  result.hidden = true;
  history.replaceState(null, "", `?id=${encodeURIComponent(tag)}`);
  try {
    const entry = await api(`/v1/entries/${encodeURIComponent(tag)}`);
    let bundle;
    try {
      bundle = await api(`/v1/entries/${encodeURIComponent(tag)}/proof`);
    } catch (error) {
      if (error.status !== 409) throw error;
      say(status, t("proof.not_sealed", { seconds: error.retryAfter ?? "5" }), "warn");
      result.replaceChildren(entryView(entry.entry, entry));
      result.hidden = false;
      return;
    }
    say(status, "");
    const link = el("a", { download: `${tag}.json`, href: URL.createObjectURL(new Blob([JSON.stringify(bundle, null, 2)], { type: "application/json" })) }, t("proof.download"));
    await show(bundle, entry);
    result.prepend(el("p", {}, link));
  } catch (error) {
    say(status, error.status === 404 ? t("proof.not_found") : t("error.load", { detail: error.message }), "error");
  }
}

async function readFile(chosen) {
  say(status, "");
  await show(await chosen.text());
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const tag = input.value.trim();
  if (!session.token()) {
    say(status, t("proof.signin_needed"), "warn");
    return;
  }
  if (tag) lookUp(tag);
});
file.addEventListener("change", () => file.files[0] && readFile(file.files[0]));
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) readFile(event.dataTransfer.files[0]);
});

await ready;
document.body.dataset.rendered = "1";
const wanted = new URLSearchParams(location.search).get("id");
if (wanted) {
  input.value = wanted;
  if (session.token()) await lookUp(wanted);
}
