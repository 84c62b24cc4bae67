// Validates Windmill flow files offline against Windmill's published OpenFlow schema (the
// npm package windmill-yaml-validator). Usage: node validate.mjs FLOW.yaml...
// Prints each error with its path; exits 1 when any file has one.
import { readFileSync } from "node:fs";
import { WindmillYamlValidator } from "windmill-yaml-validator";

const validator = new WindmillYamlValidator();
let failed = false;
for (const file of process.argv.slice(2)) {
  const result = validator.validate(readFileSync(file, "utf8"), { type: "flow" });
  const errors = result.errors ?? [];
  if (errors.length === 0) {
    console.log(`${file}: valid`);
    continue;
  }
  failed = true;
  for (const e of errors) {
    console.log(`${file}: ${e.instancePath || e.path || "/"} ${e.message ?? JSON.stringify(e)}`);
  }
}
if (process.argv.length < 3) {
  console.error("usage: node validate.mjs FLOW.yaml...");
  failed = true;
}
process.exit(failed ? 1 : 0);
