// Compile Anchor.sol with the pinned npm solc and write (or print) the Anchor.json artifact.
//
// Usage: node contracts/evm/compile.mjs            writes contracts/evm/Anchor.json
//        node contracts/evm/compile.mjs --print    prints the artifact to stdout instead
//
// The settings are pinned here and copied into the artifact, so anyone can rebuild the
// committed bytecode byte for byte (tests/anchoring/test_contract.py does).
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const here = dirname(fileURLToPath(import.meta.url));
const SOURCE_NAME = "Anchor.sol";
const CONTRACT = "Anchor";
// Pinned compiler: must equal package.json's exact "solc" version.
const SOLC_VERSION = "0.8.37";
// Pinned settings. "cancun" is the newest fork every target supports: anvil 1.7 runs
// Prague by default (a superset), py-evm/eth-tester run Cancun and later.
const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 10000 },
  viaIR: false,
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: { [SOURCE_NAME]: { [CONTRACT]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const version = solc.version();
if (!version.startsWith(`${SOLC_VERSION}+`)) {
  console.error(`compile.mjs: npm solc is ${version}, expected ${SOLC_VERSION}; run npm ci`);
  process.exit(2);
}

const source = readFileSync(join(here, SOURCE_NAME), "utf8");
const input = { language: "Solidity", sources: { [SOURCE_NAME]: { content: source } }, settings: SETTINGS };
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const compiled = output.contracts[SOURCE_NAME][CONTRACT];
const { outputSelection, ...pinned } = SETTINGS;
const artifact = {
  contractName: CONTRACT,
  sourceName: `contracts/evm/${SOURCE_NAME}`,
  sourceSha256: createHash("sha256").update(source).digest("hex"),
  compiler: { name: "solc", version },
  settings: pinned,
  abi: compiled.abi,
  bytecode: `0x${compiled.evm.bytecode.object}`,
  deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
};
const text = `${JSON.stringify(artifact, null, 2)}\n`;
if (process.argv.includes("--print")) {
  process.stdout.write(text);
} else {
  writeFileSync(join(here, "Anchor.json"), text);
  console.error(`wrote contracts/evm/Anchor.json (solc ${version})`);
}
