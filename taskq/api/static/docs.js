// Renders /openapi.json as a readable page: every operation, its inputs and its answers.
"use strict";

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

let components = {};

function resolve(schema) {
  const ref = schema && schema.$ref;
  return ref ? components[ref.split("/").pop()] : schema || {};
}

function typeOf(schema) {
  const resolved = resolve(schema);
  if (schema && schema.$ref) return resolved.title || schema.$ref.split("/").pop();
  if (resolved.enum) return resolved.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (resolved.const !== undefined) return JSON.stringify(resolved.const);
  if (resolved.anyOf) return resolved.anyOf.map(typeOf).join(" | ");
  if (resolved.type === "array") return `array of ${typeOf(resolved.items)}`;
  if (resolved.format) return `${resolved.type} (${resolved.format})`;
  return resolved.type || "any";
}

function limits(schema) {
  const notes = [];
  for (const [key, word] of [["minimum", "≥"], ["maximum", "≤"], ["minLength", "length ≥"], ["maxLength", "length ≤"]]) {
    if (schema[key] !== undefined) notes.push(`${word} ${schema[key]}`);
  }
  if (schema.default !== undefined) notes.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.description) notes.push(schema.description);
  return notes.join(", ");
}

function schemaView(schema) {
  const resolved = resolve(schema);
  if (resolved.type === "array") return el("p", { textContent: `An array of ${typeOf(resolved.items)}.` });
  if (!resolved.properties) return el("p", { textContent: typeOf(schema) });
  const required = new Set(resolved.required || []);
  const rows = Object.entries(resolved.properties).map(([name, field]) => el("tr", {},
    el("td", {}, el("code", { textContent: name })), el("td", { textContent: typeOf(field) }),
    el("td", { textContent: required.has(name) ? "required" : "" }), el("td", { textContent: limits(resolve(field)) })));
  const parts = [el("table", {}, el("tbody", {}, ...rows))];
  if (resolved.additionalProperties === false) parts.push(el("p", { textContent: "Other fields are refused." }));
  return el("div", {}, ...parts);
}

function operation(path, method, op) {
  const head = el("summary", {}, el("b", { textContent: `${method.toUpperCase()} ${path}` }), `  ${op.summary || ""}`);
  const section = el("details", { className: "panel" }, head);
  section.id = op.operationId || `${method}-${path}`;
  if (op.description) section.append(el("p", { textContent: op.description }));
  if (op.parameters && op.parameters.length) {
    const rows = op.parameters.map((p) => el("tr", {},
      el("td", {}, el("code", { textContent: p.name })), el("td", { textContent: p.in }),
      el("td", { textContent: typeOf(p.schema) }), el("td", { textContent: p.required ? "required" : limits(resolve(p.schema)) })));
    section.append(el("h3", { textContent: "Parameters" }), el("table", {}, el("tbody", {}, ...rows)));
  }
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (body) section.append(el("h3", { textContent: "Request body (JSON)" }), schemaView(body.schema));
  const answers = Object.entries(op.responses || {}).map(([status, response]) => {
    const item = el("li", {}, el("b", { textContent: status }), ` ${response.description || ""}`);
    for (const [media, content] of Object.entries(response.content || {})) {
      item.append(" — ", el("code", { textContent: media }));
      if (media === "application/json" && status < 400) item.append(schemaView(content.schema));
    }
    return item;
  });
  section.append(el("h3", { textContent: "Responses" }), el("ul", {}, ...answers));
  return section;
}

async function render() {
  const spec = await (await fetch("/openapi.json")).json();
  components = (spec.components && spec.components.schemas) || {};
  const sections = [el("p", { textContent: `${spec.info.title} ${spec.info.version} · OpenAPI ${spec.openapi} · errors are {"detail": "..."}` })];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) sections.push(operation(path, method, op));
  }
  document.getElementById("operations").replaceChildren(...sections);
}

render().catch((error) => {
  document.getElementById("operations").textContent = `Cannot load /openapi.json: ${error}`;
});
