// Bundle src/ + @msgpack/msgpack into one ES module, and copy the declarations,
// into src/ipcbus/web/static/ (package data of the Python package).
//
// Deterministic: pinned esbuild and msgpack (package-lock.json), no timestamps,
// no absolute paths, so CI rebuilds it and fails if the committed file differs
// (check-built.sh). The licences of the bundled npm packages head the file.

import { readFile, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, "..", "src", "ipcbus", "web", "static");
const pkg = JSON.parse(await readFile(path.join(here, "package.json"), "utf8"));

const result = await build({
  absWorkingDir: here,
  entryPoints: ["src/index.js"],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  charset: "utf8",
  legalComments: "none", // the licences go in the header below, whole
  metafile: true,
  write: false,
});

// Which npm packages went in, from the bundle's own inputs.
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (match) packages.add(match[1]);
}

let header =
  `// ipcbus.js: ipcbus's browser client, a web page as an ipcbus renderer (SPEC section 10).\n` +
  `// Built by js/build.mjs from js/src (licence: ${pkg.license}, as ipcbus); do not edit.\n` +
  "// Types: ipcbus.d.ts beside this file.\n//\n" +
  "// Bundled npm packages and their licences:\n";
for (const name of [...packages].sort()) {
  const dir = path.join(here, "node_modules", name);
  const meta = JSON.parse(await readFile(path.join(dir, "package.json"), "utf8"));
  const licence = await readFile(path.join(dir, "LICENSE"), "utf8");
  header += `//\n// ${name} ${meta.version} (${meta.license})\n`;
  header += licence
    .trim()
    .split("\n")
    .map((line) => (line ? `//   ${line}` : "//"))
    .join("\n");
  header += "\n";
}

const code = result.outputFiles[0].text;
await mkdir(out, { recursive: true });
await writeFile(path.join(out, "ipcbus.js"), `${header}\n${code}`);
const types = await readFile(path.join(here, "ipcbus.d.ts"), "utf8");
await writeFile(path.join(out, "ipcbus.d.ts"), types);
console.log(
  `built ${path.relative(process.cwd(), path.join(out, "ipcbus.js"))} ` +
    `(${Buffer.byteLength(header) + 1 + Buffer.byteLength(code)} bytes; bundled: ${[...packages].sort().join(", ")})`,
);
