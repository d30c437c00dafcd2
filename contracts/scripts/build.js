#!/usr/bin/env node
// Compiles contracts/src/**/*.sol with the pinned npm `solc` (standard JSON) and writes
// contracts/build/<Contract>.json. `--check` compiles and fails if build/ differs.
//
// Uniswap V2 and WETH9 artifacts are GPL-3.0: they are never copied here. build/external.json
// only records which npm package and file they come from and a sha256 of their bytecode, so
// the Python loader (chain/artifacts.py) can refuse an unexpected node_modules.
"use strict";

const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const SRC = path.join(ROOT, "src");
const BUILD = path.join(ROOT, "build");
const NODE_MODULES = path.join(ROOT, "node_modules");

const SETTINGS = {
  // py-evm (eth-tester) knows no fork newer than Prague.
  evmVersion: "prague",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

const EXTERNAL = [
  { name: "UniswapV2Factory", pkg: "@uniswap/v2-core", file: "build/UniswapV2Factory.json" },
  { name: "UniswapV2Pair", pkg: "@uniswap/v2-core", file: "build/UniswapV2Pair.json" },
  { name: "UniswapV2Router02", pkg: "@uniswap/v2-periphery", file: "build/UniswapV2Router02.json" },
  { name: "WETH9", pkg: "@uniswap/v2-periphery", file: "build/WETH9.json" },
];

function listSources(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listSources(full));
    else if (entry.name.endsWith(".sol")) out.push(full);
  }
  return out.sort();
}

function findImport(importPath) {
  const candidates = [path.join(ROOT, importPath), path.join(NODE_MODULES, importPath)];
  for (const c of candidates) {
    if (fs.existsSync(c)) return { contents: fs.readFileSync(c, "utf8") };
  }
  return { error: `import not found: ${importPath} (run \`make install\`)` };
}

function compile() {
  const sources = {};
  for (const file of listSources(SRC)) {
    const rel = path.relative(ROOT, file).split(path.sep).join("/");
    sources[rel] = { content: fs.readFileSync(file, "utf8") };
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) throw new Error(`solc failed with ${errors.length} error(s)`);

  const version = solc.version();
  const files = {};
  for (const sourceName of Object.keys(sources)) {
    for (const [contractName, c] of Object.entries(output.contracts[sourceName] || {})) {
      if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
      const artifact = {
        contractName,
        sourceName,
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        compiler: { name: "solc", version, settings: SETTINGS },
      };
      files[`${contractName}.json`] = JSON.stringify(artifact, null, 2) + "\n";
    }
  }
  files["external.json"] = JSON.stringify(externalManifest(), null, 2) + "\n";
  return files;
}

function externalManifest() {
  const manifest = {
    note: "GPL-3.0 artifacts read from node_modules at run time; never copied into the repository",
    contracts: {},
  };
  for (const ext of EXTERNAL) {
    const pkgDir = path.join(NODE_MODULES, ext.pkg);
    const version = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
    const artifact = JSON.parse(fs.readFileSync(path.join(pkgDir, ext.file), "utf8"));
    let bytecode = artifact.bytecode || artifact.evm.bytecode.object;
    if (!bytecode.startsWith("0x")) bytecode = "0x" + bytecode;
    manifest.contracts[ext.name] = {
      package: ext.pkg,
      version,
      file: ext.file,
      bytecodeSha256: crypto.createHash("sha256").update(bytecode.toLowerCase()).digest("hex"),
    };
  }
  return manifest;
}

function main() {
  const check = process.argv.includes("--check");
  const files = compile();
  if (check) {
    const existing = fs.existsSync(BUILD) ? fs.readdirSync(BUILD).filter((f) => f.endsWith(".json")) : [];
    const problems = [];
    for (const [name, content] of Object.entries(files)) {
      const p = path.join(BUILD, name);
      if (!fs.existsSync(p)) problems.push(`missing: build/${name}`);
      else if (fs.readFileSync(p, "utf8") !== content) problems.push(`differs: build/${name}`);
    }
    for (const name of existing) if (!(name in files)) problems.push(`stale: build/${name}`);
    if (problems.length) {
      process.stderr.write(problems.join("\n") + "\nrun `cd contracts && npm run build` and commit build/\n");
      process.exit(1);
    }
    process.stdout.write(`build/ matches sources (${Object.keys(files).length} files, solc ${solc.version()})\n`);
    return;
  }
  fs.mkdirSync(BUILD, { recursive: true });
  for (const name of fs.readdirSync(BUILD)) {
    if (name.endsWith(".json") && !(name in files)) fs.unlinkSync(path.join(BUILD, name));
  }
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(BUILD, name), content);
  process.stdout.write(`wrote ${Object.keys(files).length} files to build/ with solc ${solc.version()}\n`);
}

main();
