// Renders /openapi.json as a readable page: every operation, its inputs and its answers.
"use strict";

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function resolve(schema, components) {
  const ref = schema && schema.$ref;
  return ref ? components[ref.split("/").pop()] : schema;
}

function schemaBlock(schema, components) {
  const text = JSON.stringify(resolve(schema, components), null, 2);
  return el("pre", { textContent: text });
}

function operation(path, method, op, components) {
  const section = el("section", { className: "panel" });
  section.id = op.operationId || `${method}-${path}`;
  section.append(el("h2", { textContent: `${method.toUpperCase()} ${path}` }));
  if (op.summary) section.append(el("p", { textContent: op.summary }));
  if (op.description) section.append(el("p", { textContent: op.description }));
  if (op.parameters && op.parameters.length) {
    const rows = op.parameters.map((p) => el("tr", {},
      el("td", { textContent: p.name }), el("td", { textContent: p.in }),
      el("td", { textContent: JSON.stringify(p.schema) }), el("td", { textContent: p.required ? "required" : "" })));
    section.append(el("h3", { textContent: "Parameters" }), el("table", {}, el("tbody", {}, ...rows)));
  }
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (body) section.append(el("h3", { textContent: "Request body (JSON)" }), schemaBlock(body.schema, components));
  const answers = Object.entries(op.responses || {}).map(([status, response]) => {
    const item = el("li", {}, el("b", { textContent: status }), ` ${response.description || ""}`);
    for (const [media, content] of Object.entries(response.content || {})) {
      item.append(el("div", { textContent: media }));
      if (media === "application/json") item.append(schemaBlock(content.schema, components));
    }
    return item;
  });
  section.append(el("h3", { textContent: "Responses" }), el("ul", {}, ...answers));
  return section;
}

async function render() {
  const spec = await (await fetch("/openapi.json")).json();
  const components = (spec.components && spec.components.schemas) || {};
  const sections = [el("p", { textContent: `${spec.info.title} ${spec.info.version} · OpenAPI ${spec.openapi}` })];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) sections.push(operation(path, method, op, components));
  }
  document.getElementById("operations").replaceChildren(...sections);
}

render().catch((error) => {
  document.getElementById("operations").textContent = `Cannot load /openapi.json: ${error}`;
});
