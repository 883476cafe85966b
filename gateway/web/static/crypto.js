// SHA-256 and Ed25519 for the verifier: WebCrypto where the browser has it, else the
// vendored noble libraries (crypto.subtle is missing outside secure contexts, e.g. plain
// http to a gateway on the LAN, and Ed25519 is missing from older browsers).
import * as ed from "./vendor/noble-ed25519-3.2.0.js";
import { sha256 as nobleSha256, sha512 } from "./vendor/noble-hashes-2.4.0/sha2.js";

ed.hashes.sha512 = sha512;

let forceNoble = false;
let webEd25519 = null; // a promise: does this browser's WebCrypto verify Ed25519?

/** Use the noble libraries even where WebCrypto would do (tests check both paths). */
export function useNoble(flag) {
  forceNoble = flag;
}

function subtle() {
  return forceNoble ? undefined : globalThis.crypto?.subtle;
}

/** Which implementation each primitive uses here, for the page to show. */
export async function backends() {
  return {
    sha256: subtle() ? "WebCrypto" : "noble-hashes 2.4.0",
    ed25519: (await hasWebEd25519()) ? "WebCrypto" : "noble-ed25519 3.2.0",
  };
}

async function hasWebEd25519() {
  const api = subtle();
  if (!api) return false;
  webEd25519 ??= api
    .generateKey({ name: "Ed25519" }, false, ["sign", "verify"])
    .then(() => true, () => false);
  return webEd25519;
}

/** SHA-256 of bytes. */
export async function sha256(bytes) {
  const api = subtle();
  return api ? new Uint8Array(await api.digest("SHA-256", bytes)) : nobleSha256(bytes);
}

/** Does `signature` verify `message` under the 32-byte Ed25519 `publicKey` (RFC 8032)? */
export async function verifyEd25519(publicKey, message, signature) {
  if (await hasWebEd25519()) {
    try {
      const key = await subtle().importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
      return await subtle().verify({ name: "Ed25519" }, key, signature, message);
    } catch {
      return false; // not a point on the curve
    }
  }
  try {
    // zip215: false is RFC 8032's strict decoding, as libsodium checks on the gateway.
    return ed.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}
