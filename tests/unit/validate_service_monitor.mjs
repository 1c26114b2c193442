// Validates the ServiceMonitor objects given as a JSON array on stdin against the Prometheus Operator's schema
// (the npm package @kubernetes-models/prometheus-operator, installed by `make test` under the path given as the
// first argument). Prints one line per invalid object and exits 1 if there is any.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const root = join(process.argv[2], "node_modules", "@kubernetes-models", "prometheus-operator");
const { ServiceMonitor } = createRequire(import.meta.url)(join(root, "monitoring.coreos.com", "v1", "ServiceMonitor.js"));
let failed = false;
for (const object of JSON.parse(readFileSync(0, "utf8"))) {
  try {
    new ServiceMonitor(object).validate();
  } catch (error) {
    failed = true;
    console.log(`${object.metadata?.name}: ${error.message}`);
  }
}
process.exit(failed ? 1 : 0);
