// Regenerates src/gen from the repository's proto/ with buf and the local protoc-gen-es (see buf.gen.yaml).
//
//   node scripts/generate.mjs            write src/gen (npm run generate)
//   node scripts/generate.mjs --check    regenerate into a temporary directory and compare with the committed
//                                        src/gen; exit 1 and name the files when they differ
//                                        (npm run check:generated)

import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE = resolve(fileURLToPath(import.meta.url), "../..");
const ROOT = resolve(PACKAGE, "../..");
const GEN = join(PACKAGE, "src", "gen");
const BUF = join(PACKAGE, "node_modules", ".bin", "buf");

function generate(outputBase) {
  if (!existsSync(BUF)) {
    console.error("buf is not installed: run `npm ci` in clients/typescript first");
    process.exit(1);
  }
  // From the repository root: buf.gen.yaml's paths (proto/, the plugin, the output) are relative to it.
  const args = ["generate", ...(outputBase ? ["--output", outputBase] : [])];
  execFileSync(BUF, args, { cwd: ROOT, stdio: "inherit" });
}

/** Every file under `dir`, as paths relative to it. */
function files(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath ?? entry.path, entry.name)))
    .sort();
}

function check() {
  const tmp = mkdtempSync(join(tmpdir(), "strait-ts-gen-"));
  try {
    generate(tmp);
    const fresh = join(tmp, relative(ROOT, GEN));
    const committed = new Set(files(GEN));
    const expected = files(fresh);
    const stale = expected.filter(
      (f) => !committed.has(f) || !readFileSync(join(GEN, f)).equals(readFileSync(join(fresh, f))),
    );
    const extra = [...committed].filter((f) => !expected.includes(f));
    if (stale.length > 0 || extra.length > 0) {
      console.error(`generated TypeScript code is stale: ${[...stale, ...extra].join(", ")}`);
      console.error("run: npm run generate (in clients/typescript)");
      process.exit(1);
    }
    console.log("generated TypeScript code is up to date");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv.includes("--check")) {
  check();
} else {
  generate();
}
