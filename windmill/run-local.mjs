// Runs a Windmill flow's modules here, the way a same_worker flow runs them on one worker:
// input transforms evaluated as JavaScript over flow_input and results, bash modules given
// their arguments as $1, $2... in the order the script reads them, a module's result being
// the last line of its stdout (JSON), branchone taking the first branch whose expr holds.
// Only what kforge's flow uses is supported; anything else is an error.
//
// Usage: node run-local.mjs FLOW.yaml FLOW_INPUT_JSON   (prints the flow's result)
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import yaml from "js-yaml";

const [file, inputText] = process.argv.slice(2);
if (!file || !inputText) {
  console.error("usage: node run-local.mjs FLOW.yaml FLOW_INPUT_JSON");
  process.exit(2);
}
const flow = yaml.safeLoad(readFileSync(file, "utf8"));
const flow_input = JSON.parse(inputText);
const results = {};

const evaluate = (expr) => new Function("flow_input", "results", `return (${expr});`)(flow_input, results);

function runScript(id, v) {
  if (v.language !== "bash") throw new Error(`${id}: language ${v.language} is not supported here`);
  const names = [...v.content.matchAll(/^(\w+)="\$(\d+)"$/gm)].sort((a, b) => a[2] - b[2]).map((m) => m[1]);
  const args = names.map((name) => {
    const t = v.input_transforms[name];
    if (!t) throw new Error(`${id}: no input transform for ${name}`);
    const value = t.type === "javascript" ? evaluate(t.expr) : t.value;
    return typeof value === "string" ? value : JSON.stringify(value);
  });
  const dir = mkdtempSync(join(tmpdir(), `wm-${id}-`));
  try {
    writeFileSync(join(dir, "main.sh"), v.content);
    const r = spawnSync("bash", ["main.sh", ...args], { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`module ${id} failed (exit ${r.status})`);
    const lines = r.stdout.split("\n").filter((l) => l.trim() !== "");
    return JSON.parse(lines[lines.length - 1]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runModules(modules) {
  let last = null;
  for (const m of modules) {
    const v = m.value;
    if (v.type === "rawscript") last = runScript(m.id, v);
    else if (v.type === "branchone") {
      const branch = v.branches.find((b) => evaluate(b.expr));
      last = runModules(branch ? branch.modules : v.default);
    } else throw new Error(`${m.id}: module type ${v.type} is not supported here`);
    results[m.id] = last;
    console.error(`[run-local] ${m.id} done`);
  }
  return last;
}

try {
  console.log(JSON.stringify(runModules(flow.value.modules)));
} catch (e) {
  console.error(`run-local: ${e.message}`);
  process.exit(1);
}
