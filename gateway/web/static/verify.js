// The in-browser verifier of patio-proof/v1 bundles: the same checks, in the same order and
// under the same names, as ledger/verify.py (DESIGN.md pinned formats 1-8).

import { equal, fromBase64, fromHex, toHex, utf8 } from "./bytes.js";
import { verifyEd25519 } from "./crypto.js";
import { canonicalize, FormatError, parseStrict } from "./jcs.js";
import { leafHash, VerificationError, verifyConsistency, verifyInclusion } from "./merkle.js";
import { openNote, parseCheckpointBody, parseVerifierKey } from "./note.js";

export const FORMAT = "patio-proof/v1";
const LOG_TAG_PREFIX = "c274b5"; // DESIGN.md pinned format 6
// The checks a bundle passes, in the order they are made; a failure names one of them.
export const CHECKS = [
  "format", "log key", "checkpoint signature", "entry hash", "inclusion", "log tag",
  "device signature", "anchor",
];

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;

function field(obj, key, test, what) {
  if (!test(obj[key])) throw new FormatError(what);
  return obj[key];
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isString = (v) => typeof v === "string";

function hashes(value, what) {
  if (!Array.isArray(value)) throw new FormatError(`${what} must be a list of hex hashes`);
  return value.map((h, i) => fromHex(h, `${what}[${i}]`, 32));
}

/** Check the shape of a bundle (as ledger/bundle.py ProofBundle.parse); nothing verified yet. */
export function parseBundle(data) {
  const obj = typeof data === "string" ? parseStrict(data) : data;
  if (!isObject(obj)) throw new FormatError("bundle must be a JSON object");
  if (obj.format !== FORMAT) throw new FormatError(`format must be '${FORMAT}', not ${JSON.stringify(obj.format)}`);
  const inclusion = field(obj, "inclusion", isObject, "inclusion must be a JSON object");
  const anchors = obj.anchors ?? [];
  if (!Array.isArray(anchors)) throw new FormatError("anchors must be a list");
  const entry = field(obj, "entry", isObject, "entry must be a JSON object");
  if (!isObject(entry.payload)) throw new FormatError("entry.payload must be a JSON object");
  if (!isString(entry.sig)) throw new FormatError("entry.sig must be a string");
  return {
    logTagId: field(obj, "log_tag_id", isString, "log_tag_id must be a string"),
    leafIndex: field(obj, "leaf_index", isCount, "leaf_index must be a non-negative integer"),
    entry,
    treeSize: field(inclusion, "tree_size", isCount, "inclusion.tree_size must be a non-negative integer"),
    hashes: hashes(inclusion.hashes, "inclusion.hashes"),
    checkpoint: field(obj, "checkpoint", isString, "checkpoint must be a string"),
    logKey: field(obj, "log_key", isString, "log_key must be a string"),
    deviceKey: field(obj, "device_key", isString, "device_key must be a string"),
    anchors: anchors.map((a, i) => parseAnchor(a, `anchors[${i}]`)),
  };
}

function parseAnchor(a, what) {
  if (!isObject(a)) throw new FormatError(`${what} must be a JSON object`);
  if (a.contract !== null && a.contract !== undefined && !isString(a.contract)) {
    throw new FormatError(`${what}.contract must be an address or null`);
  }
  if (a.block_number !== null && a.block_number !== undefined && !Number.isSafeInteger(a.block_number)) {
    throw new FormatError(`${what}.block_number must be an integer or null`);
  }
  return {
    chainId: field(a, "chain_id", isCount, `${what}.chain_id must be a non-negative integer`),
    txHash: field(a, "tx_hash", isString, `${what}.tx_hash must be a string`),
    blockNumber: a.block_number ?? null,
    contract: a.contract ?? null,
    treeSize: field(a, "tree_size", isCount, `${what}.tree_size must be a non-negative integer`),
    root: fromHex(field(a, "root", isString, `${what}.root must be a string`), `${what}.root`, 32),
    consistency: hashes(a.consistency ?? [], `${what}.consistency`),
  };
}

function leafHashOfTag(tag) {
  if (tag.length !== LOG_TAG_PREFIX.length + 64 || !tag.startsWith(LOG_TAG_PREFIX)) {
    throw new FormatError(`log_tag_id must be '${LOG_TAG_PREFIX}' followed by 64 lowercase hex`);
  }
  return fromHex(tag.slice(LOG_TAG_PREFIX.length), "log_tag_id", 32);
}

/**
 * Verify a bundle (its JSON text or parsed object) against the pinned log key.
 * Never throws: returns {valid, failed, message, steps: [{check, status, detail}], bundle, checkpoint},
 * where status is "ok", "failed" or "skipped" (not reached after a failure).
 */
export async function verifyBundle(data, { pinnedLogKey }) {
  const steps = [];
  const pass = (check, detail = "") => steps.push({ check, status: "ok", detail });
  const result = { valid: false, failed: null, message: "", steps, bundle: null, checkpoint: null };
  let current = "format";
  try {
    const bundle = parseBundle(data);
    result.bundle = bundle;
    const tagged = leafHashOfTag(bundle.logTagId);
    const deviceKey = fromBase64(bundle.deviceKey, "device_key", 32);
    const signature = fromBase64(bundle.entry.sig, "entry.sig", 64);
    const entryBytes = utf8(canonicalize(bundle.entry));
    const payloadBytes = utf8(canonicalize(bundle.entry.payload));
    pass("format", FORMAT);

    current = "log key";
    const carried = await parseVerifierKey(bundle.logKey);
    const pinned = await parseVerifierKey(pinnedLogKey);
    if (pinned.text !== carried.text) {
      throw new VerificationError("log key", `the bundle names ${carried.text}, the pinned key is ${pinned.text}`);
    }
    pass("log key", carried.text);

    current = "checkpoint signature";
    const checkpoint = parseCheckpointBody(await openNote(bundle.checkpoint, carried));
    result.checkpoint = checkpoint;
    pass("checkpoint signature", `${checkpoint.origin}, tree size ${checkpoint.treeSize}`);

    current = "inclusion";
    if (bundle.treeSize !== checkpoint.treeSize) {
      throw new VerificationError("inclusion", `proof is for tree size ${bundle.treeSize}, the checkpoint is ${checkpoint.treeSize}`);
    }
    const leaf = await leafHash(entryBytes);
    const included = (candidate) => verifyInclusion(candidate, bundle.leafIndex, checkpoint.treeSize, bundle.hashes, checkpoint.rootHash).then(() => true, () => false);
    // Tell apart which claim is false: the entry's bytes, the proof itself or the tag.
    current = "entry hash";
    if (!(await included(leaf)) && !equal(leaf, tagged) && (await included(tagged))) {
      throw new VerificationError("entry hash", "the entry's bytes do not hash to the leaf the log recorded");
    }
    pass("entry hash", toHex(leaf));
    current = "inclusion";
    await verifyInclusion(leaf, bundle.leafIndex, checkpoint.treeSize, bundle.hashes, checkpoint.rootHash);
    pass("inclusion", `leaf ${bundle.leafIndex} of ${checkpoint.treeSize}, ${bundle.hashes.length} hashes`);
    current = "log tag";
    if (!equal(tagged, leaf)) {
      throw new VerificationError("log tag", `log_tag_id does not name this entry (expected ${LOG_TAG_PREFIX}${toHex(leaf)})`);
    }
    pass("log tag", bundle.logTagId);

    current = "device signature";
    if (!(await verifyEd25519(deviceKey, payloadBytes, signature))) {
      throw new VerificationError("device signature", "signature does not match");
    }
    pass("device signature", bundle.deviceKey);

    current = "anchor";
    for (const [position, anchor] of bundle.anchors.entries()) {
      try {
        await verifyConsistency(anchor.treeSize, checkpoint.treeSize, anchor.consistency, anchor.root, checkpoint.rootHash);
      } catch (error) {
        if (!(error instanceof VerificationError)) throw error;
        throw new VerificationError("anchor", `anchors[${position}] root is not an ancestor of the checkpoint: ${error.message}`);
      }
      pass("anchor", `chain ${anchor.chainId}, tx ${anchor.txHash}, tree size ${anchor.treeSize}`);
    }
    result.valid = true;
  } catch (error) {
    if (!(error instanceof VerificationError || error instanceof FormatError)) throw error;
    result.failed = error instanceof VerificationError ? error.check : current === "format" ? "format" : current;
    result.message = error.message;
    steps.push({ check: result.failed, status: "failed", detail: error.message });
  }
  const done = new Set(steps.map((s) => s.check));
  for (const check of CHECKS) {
    if (!done.has(check) && !(check === "anchor" && result.valid)) steps.push({ check, status: "skipped", detail: "" });
  }
  return result;
}
