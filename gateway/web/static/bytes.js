// Strict decoders for the encodings the pinned formats use: hex, standard base64, UTF-8.

import { FormatError } from "./jcs.js";

export const utf8 = (text) => new TextEncoder().encode(text);

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function equal(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

export const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** Lowercase hex of an exact length, as the ledger writes it. */
export function fromHex(text, what, length) {
  if (typeof text !== "string" || !/^([0-9a-f]{2})*$/.test(text)) {
    throw new FormatError(`${what} must be lowercase hex`);
  }
  const bytes = Uint8Array.from(text.match(/../g) ?? [], (pair) => parseInt(pair, 16));
  if (length !== undefined && bytes.length !== length) {
    throw new FormatError(`${what} must be ${length} bytes, not ${bytes.length}`);
  }
  return bytes;
}

export const toBase64 = (bytes) => btoa(String.fromCharCode(...bytes));

/** Standard base64 with padding, canonical only (DESIGN.md pinned format 2). */
export function fromBase64(text, what, length) {
  let bytes;
  try {
    if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new Error();
    bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new FormatError(`${what} is not valid base64`);
  }
  if (toBase64(bytes) !== text) throw new FormatError(`${what} is not canonical base64`);
  if (length !== undefined && bytes.length !== length) {
    throw new FormatError(`${what} must decode to ${length} bytes, not ${bytes.length}`);
  }
  return bytes;
}
