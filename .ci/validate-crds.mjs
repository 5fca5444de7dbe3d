// Validates ServiceMonitor and PrometheusRule objects (a JSON array in argv[2]) against the
// prometheus-operator JSON schemas of @kubernetes-models/prometheus-operator, and ScaledObjects
// against KEDA's (@kubernetes-models/keda). Run from a directory whose node_modules holds both
// packages. Exit 1 on the first invalid object.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

const kinds = { ServiceMonitor, PrometheusRule, ScaledObject };
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
for (const obj of objects) {
  const Model = kinds[obj.kind];
  if (!Model) {
    console.error(`unexpected kind ${obj.kind}`);
    process.exit(1);
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    console.error(`${obj.kind}/${obj.metadata.name}: ${e.message}`);
    process.exit(1);
  }
}
console.log(objects.map((o) => `${o.kind}/${o.metadata.name}`).join(", "));
