// C2SP signed notes and tlog checkpoints (c2sp.org/signed-note, c2sp.org/tlog-checkpoint),
// as ledger/note.py: the verifier key, the signature check, the checkpoint body.

import { concat, equal, fromBase64, fromHex, toHex, utf8 } from "./bytes.js";
import { sha256, verifyEd25519 } from "./crypto.js";
import { FormatError } from "./jcs.js";
import { VerificationError } from "./merkle.js";

const ED25519 = 0x01; // c2sp.org/signed-note: the Ed25519 signature type byte
const SIGNATURE_PREFIX = "\u2014 "; // each signature line starts with an em dash and a space
const KEY_NAME = /^[^\s+]+$/u;

/** Key id: the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key). */
export async function keyId(name, publicKey) {
  return (await sha256(concat(utf8(name), Uint8Array.of(0x0a, ED25519), publicKey))).slice(0, 4);
}

/** Parse `<name>+<hex key id>+<base64(0x01 || public key)>` and check its key id. */
export async function parseVerifierKey(text) {
  const parts = String(text).trim().split("+");
  if (parts.length < 3) throw new FormatError("log key must read <name>+<hex key id>+<base64 key>");
  const [name, hexId] = parts;
  const encoded = parts.slice(2).join("+");
  if (!KEY_NAME.test(name)) throw new FormatError("log key name is not a valid key name");
  const id = fromHex(hexId, "log key id", 4);
  const raw = fromBase64(encoded, "log key", 33);
  if (raw[0] !== ED25519) throw new FormatError("log key is not an Ed25519 verifier key");
  const publicKey = raw.slice(1);
  if (!equal(await keyId(name, publicKey), id)) {
    throw new FormatError("log key id does not match its public key");
  }
  return { name, keyId: id, publicKey, text: `${name}+${toHex(id)}+${encoded}` };
}

/** The body of `note` if `verifier` signed it; VerificationError otherwise. */
export async function openNote(note, verifier) {
  if (typeof note !== "string") throw new FormatError("checkpoint must be a signed note string");
  const cut = note.lastIndexOf("\n\n");
  const signatures = note.slice(cut + 2);
  if (cut < 0 || !signatures.endsWith("\n")) {
    throw new FormatError("checkpoint is not a signed note: no signature block");
  }
  const body = note.slice(0, cut + 1);
  let found = false;
  for (const line of signatures.slice(0, -1).split("\n")) {
    if (!line.startsWith(SIGNATURE_PREFIX)) {
      throw new FormatError(`malformed signature line in checkpoint: ${line.slice(0, 40)}`);
    }
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(" ");
    const name = space < 0 ? rest : rest.slice(0, space);
    const raw = fromBase64(space < 0 ? "" : rest.slice(space + 1), "checkpoint signature");
    if (name !== verifier.name || !equal(raw.slice(0, 4), verifier.keyId)) continue; // a cosigner's
    found = true;
    if (!(await verifyEd25519(verifier.publicKey, utf8(body), raw.slice(4)))) {
      throw new VerificationError("checkpoint signature", `signature by ${verifier.name} does not verify`);
    }
  }
  if (!found) {
    throw new VerificationError("checkpoint signature", `no signature by log key ${verifier.name} on the checkpoint`);
  }
  return body;
}

/** Origin, tree size and root hash of a checkpoint body; extension lines are ignored. */
export function parseCheckpointBody(body) {
  const lines = body.split("\n");
  if (lines.length < 4 || lines[lines.length - 1] !== "") {
    throw new FormatError("checkpoint body must have origin, size and root lines");
  }
  const [origin, sizeText, rootText] = lines;
  if (!origin) throw new FormatError("checkpoint origin is empty");
  if (!/^(0|[1-9]\d*)$/.test(sizeText) || Number(sizeText) > Number.MAX_SAFE_INTEGER) {
    throw new FormatError(`checkpoint tree size is not a decimal number: ${sizeText}`);
  }
  return { origin, treeSize: Number(sizeText), rootHash: fromBase64(rootText, "checkpoint root hash", 32) };
}
