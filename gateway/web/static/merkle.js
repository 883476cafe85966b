// RFC 9162 Merkle tree hashing and proof verification (section 2.1), as ledger/merkle.py.

import { concat, equal } from "./bytes.js";
import { sha256 } from "./crypto.js";

export class VerificationError extends Error {
  constructor(check, message) {
    super(message);
    this.check = check;
  }
}

const LEAF = Uint8Array.of(0x00);
const NODE = Uint8Array.of(0x01);

export const leafHash = (entry) => sha256(concat(LEAF, entry));
export const nodeHash = (left, right) => sha256(concat(NODE, left, right));

/** RFC 9162 2.1.3.2: does `proof` lead from leaf `index` of a tree of `size` to `root`? */
export async function verifyInclusion(leaf, index, size, proof, root) {
  if (!(index >= 0 && index < size)) {
    throw new VerificationError("inclusion", `leaf index ${index} is outside tree size ${size}`);
  }
  // Sizes fit in 2^53, beyond 32-bit operators: halve with Math.floor, test parity with %.
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) throw new VerificationError("inclusion", "proof is longer than the tree is deep");
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new VerificationError("inclusion", "proof is shorter than the tree is deep");
  if (!equal(r, root)) {
    throw new VerificationError("inclusion", "proof does not lead to the checkpoint's root hash");
  }
}

function isPowerOfTwo(n) {
  // Not Math.log2: it rounds 2^50 + 1 to exactly 50.
  let m = n;
  while (m > 1 && m % 2 === 0) m /= 2;
  return m === 1;
}

/** RFC 9162 2.1.4.2: does the tree of `second` extend the tree of `first`? */
export async function verifyConsistency(first, second, proof, firstRoot, secondRoot) {
  const fail = (message) => new VerificationError("consistency", message);
  if (!(first >= 0 && first <= second)) throw fail(`size ${second} cannot extend size ${first}`);
  if (first === second || first === 0) {
    if (proof.length) throw fail("proof must be empty for these sizes");
    if (first === second && !equal(firstRoot, secondRoot)) {
      throw fail("same tree size but different root hashes");
    }
    return;
  }
  if (!proof.length) throw fail("proof is empty");
  const path = [...proof];
  if (isPowerOfTwo(first)) path.unshift(firstRoot);
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) throw fail("proof is longer than the tree is deep");
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw fail("proof is shorter than the tree is deep");
  if (!equal(fr, firstRoot)) throw fail("proof does not lead to the older root hash");
  if (!equal(sr, secondRoot)) throw fail("proof does not lead to the newer root hash");
}
