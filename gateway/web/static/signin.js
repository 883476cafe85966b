// Sign-in: an app API key or the admin token, checked with GET /v1/me before it is kept.

import { api, ready, say, session, t } from "./app.js";

const form = document.getElementById("signin");
const status = document.getElementById("status");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = form.elements.token.value.trim();
  if (!token) return;
  try {
    await api("/v1/me", { token });
  } catch (error) {
    say(status, error.status === 401 ? t("signin.refused") : t("error.load", { detail: error.message }), "error");
    return;
  }
  session.save(token, form.elements.remember.checked);
  const next = new URLSearchParams(location.search).get("next");
  location.assign(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
});

await ready;
document.body.dataset.rendered = "1";
