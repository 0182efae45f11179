// Validates rendered Kubernetes manifests: every object against the
// Kubernetes API schema of its kind (the npm package kubernetes-models),
// then the deployment rules this project relies on, which a schema cannot
// express (hardening, probes, grace period above the drain grace, selectors
// that select, an HPA that targets something). Exit status 1 on any finding.
// Usage: node check.js FILE.yaml...   (run by deploy/k8s/validate.sh)
"use strict";
const fs = require("fs");
const YAML = require("yaml");

const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

// kubernetes-models lays out one module per API group and version.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const path = group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
  try {
    return require(path)[kind];
  } catch (e) {
    return undefined;
  }
}

function validateSchema(doc, where) {
  const Model = modelFor(doc.apiVersion, doc.kind);
  if (!Model) return problem(where, `no schema for ${doc.apiVersion} ${doc.kind}`);
  try {
    new Model(doc).validate();
  } catch (e) {
    problem(where, `schema: ${e.message}`);
  }
}

const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);

function checkDeployment(d, where, all) {
  const pod = d.spec.template;
  const spec = pod.spec;
  const psc = spec.securityContext || {};
  if (psc.runAsNonRoot !== true) problem(where, "pod securityContext.runAsNonRoot is not true");
  if (!psc.seccompProfile || psc.seccompProfile.type !== "RuntimeDefault")
    problem(where, "pod seccompProfile is not RuntimeDefault");
  if (!matches(d.spec.selector.matchLabels, pod.metadata.labels)) problem(where, "selector does not select its pods");
  const grace = spec.terminationGracePeriodSeconds;
  for (const c of spec.containers) {
    const at = `${where} container ${c.name}`;
    const sc = c.securityContext || {};
    if (sc.allowPrivilegeEscalation !== false) problem(at, "allowPrivilegeEscalation is not false");
    if (sc.readOnlyRootFilesystem !== true) problem(at, "readOnlyRootFilesystem is not true");
    if (!sc.capabilities || !(sc.capabilities.drop || []).includes("ALL")) problem(at, "capabilities do not drop ALL");
    if (!/:[0-9A-Za-z._-]+$/.test(c.image) || c.image.endsWith(":latest")) problem(at, `image ${c.image}: no version tag`);
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"])
      if (!c[probe]) problem(at, `no ${probe}`);
    if (!c.resources || !c.resources.limits || !c.resources.limits.memory) problem(at, "no memory limit");
    if (!c.resources || !c.resources.requests || !c.resources.requests.cpu) problem(at, "no cpu request");
  }
  // The configuration mounted: its drain grace must fit in the pod's.
  for (const v of spec.volumes || []) {
    if (!v.configMap) continue;
    const cm = all.find((o) => o.kind === "ConfigMap" && o.metadata.name === v.configMap.name);
    if (!cm) return problem(where, `configMap ${v.configMap.name} is not among the manifests`);
    // The server's default drain is 30 s, the gateway's 120 s.
    const gateway = "gateway.textproto" in cm.data;
    const text = cm.data[gateway ? "gateway.textproto" : "server.textproto"] || "";
    const m = /^\s*drain_grace_seconds:\s*(\d+)/m.exec(text);
    const drain = m ? Number(m[1]) : gateway ? 120 : 30;
    if (!(grace > drain)) problem(where, `terminationGracePeriodSeconds ${grace} is not above drain_grace_seconds ${drain}`);
  }
}

// A pod with the front proxy (image unetrpp-proxy, deploy/k8s/overlays/proxied):
// the server behind it listens on loopback only, where the proxy sends to
// it, and does not declare the port the proxy serves; else clients could
// reach the server around the proxy (docs/deploy.md, "HTTP/2 below the
// application").
function checkProxied(d, where, all) {
  const spec = d.spec.template.spec;
  const proxy = spec.containers.find((c) => /^unetrpp-proxy(:|$)/.test(c.image));
  if (!proxy) return;
  const server = spec.containers.find((c) => /^unetrpp-serve(-[a-z]+)?(:|$)/.test(c.image));
  if (!server) return problem(where, "a proxy container without the server container");
  const env = Object.fromEntries((proxy.env || []).map((e) => [e.name, e.value]));
  const mount = (server.volumeMounts || []).find((m) => m.mountPath === "/etc/unetrpp");
  const volume = mount && (spec.volumes || []).find((v) => v.name === mount.name);
  const cm = volume && volume.configMap && all.find((o) => o.kind === "ConfigMap" && o.metadata.name === volume.configMap.name);
  const text = (cm && cm.data["server.textproto"]) || "";
  const m = /^\s*listen_address:\s*"([^"]*)"/m.exec(text);
  if (!m) return problem(where, "the server behind the proxy has no listen_address");
  if (!/^(127\.0\.0\.1|\[::1\]|localhost):\d+$/.test(m[1]))
    problem(where, `the server behind the proxy listens on ${m[1]}, beyond loopback`);
  // Behind the proxy every call comes from loopback, where a server with no
  // credential source would let callers in anonymously (server/config.cc's
  // development default): the proxied server must require credentials.
  const auth = /^\s*auth\s*\{([^}]*)\}/m.exec(text);
  if (!auth || !/^\s*required:\s*true\b/m.test(auth[1]) || /^\s*allow_anonymous:\s*true\b/m.test(auth[1]))
    problem(where, "the server behind the proxy does not require credentials (auth { required: true })");
  if (env.UPP_SERVER_ADDRESS !== m[1])
    problem(where, `the proxy sends to ${env.UPP_SERVER_ADDRESS}, the server listens on ${m[1]}`);
  const proxied = new Set((proxy.ports || []).map((p) => p.containerPort));
  for (const p of server.ports || [])
    if (proxied.has(p.containerPort) || p.name === "grpc")
      problem(where, `the server container declares port ${p.name || p.containerPort}, which the proxy serves`);
}

function podsOf(all) {
  return all.filter((o) => o.kind === "Deployment").map((d) => d.spec.template.metadata.labels);
}

function checkSelects(o, where, all, selector) {
  if (!podsOf(all).some((labels) => matches(selector, labels))) problem(where, "selects no pods of the deployment");
}

// Every port a Service exposes is admitted by a NetworkPolicy of the same
// pods, and only from listed sources (an ipBlock, a namespace or pod
// selector), never from anywhere: a port added to a Service without its
// allow-list is a finding.
function checkServicePortsGuarded(svc, where, all) {
  const pods = all.filter((o) => o.kind === "Deployment" && matches(svc.spec.selector, o.spec.template.metadata.labels));
  for (const p of svc.spec.ports || []) {
    // The container port behind it: targetPort by number or by name.
    const numbers = new Set([p.port]);
    for (const d of pods)
      for (const c of d.spec.template.spec.containers)
        for (const cp of c.ports || [])
          if (cp.name === p.targetPort || cp.containerPort === p.targetPort) numbers.add(cp.containerPort);
    const rules = all
      .filter((o) => o.kind === "NetworkPolicy" && pods.some((d) => matches(o.spec.podSelector.matchLabels, d.spec.template.metadata.labels)))
      .flatMap((np) => np.spec.ingress || [])
      .filter((r) => (r.ports || []).some((rp) => numbers.has(rp.port) || rp.port === p.targetPort));
    const at = `${where} port ${p.name || p.port}`;
    if (!rules.length) problem(at, "no NetworkPolicy admits it (an allow-list of sources is required)");
    for (const r of rules) if (!r.from || !r.from.length) problem(at, "a NetworkPolicy admits it from anywhere");
  }
}

function check(all, file) {
  for (const [i, o] of all.entries()) {
    const where = `${file} #${i + 1} ${o.kind}/${o.metadata && o.metadata.name}`;
    validateSchema(o, where);
    if (o.kind === "Deployment") {
      checkDeployment(o, where, all);
      checkProxied(o, where, all);
    }
    if (o.kind === "Service") {
      checkSelects(o, where, all, o.spec.selector);
      checkServicePortsGuarded(o, where, all);
    }
    if (o.kind === "PodDisruptionBudget") checkSelects(o, where, all, o.spec.selector.matchLabels);
    if (o.kind === "NetworkPolicy") checkSelects(o, where, all, o.spec.podSelector.matchLabels);
    if (o.kind === "HorizontalPodAutoscaler") {
      const t = o.spec.scaleTargetRef;
      if (!all.some((d) => d.kind === t.kind && d.metadata.name === t.name)) problem(where, `targets no ${t.kind} ${t.name}`);
    }
  }
}

let objects = 0;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  const all = [];
  for (const doc of docs) {
    if (doc.errors.length) problem(file, `YAML: ${doc.errors[0].message}`);
    const o = doc.toJS();
    if (o) all.push(o);
  }
  objects += all.length;
  // Objects of other files (the monitoring rules) are checked alone.
  check(all, file);
}
if (problems.length) {
  for (const p of problems) console.error(`manifests: ${p}`);
  process.exit(1);
}
console.log(`manifests: ${objects} objects valid (Kubernetes API schemas + deployment rules)`);
