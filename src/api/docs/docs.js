// Renders the OpenAPI document next to this page. Everything from the
// document goes through textContent, never innerHTML, so no text in it can
// become markup.
(function () {
  "use strict";
  var METHODS = ["get", "post", "put", "delete"];
  // `/docs/` and `/docs` both serve this page; the document sits beside
  // `/docs`, also behind a reverse proxy that adds a path prefix.
  var base = location.pathname.replace(/\/docs\/?$/, "");
  var specUrl = base + "/openapi.json";
  document.getElementById("spec-link").href = specUrl;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function resolve(spec, value) {
    var seen = 0;
    while (value && value.$ref && seen++ < 16) {
      var parts = value.$ref.replace(/^#\//, "").split("/");
      value = parts.reduce(function (node, key) { return node && node[key]; }, spec);
    }
    return value || {};
  }

  // A compact, readable rendering of a schema: `{ field: type, ... }`.
  function describe(spec, schema, depth) {
    var refName = schema && schema.$ref ? schema.$ref.split("/").pop() : null;
    schema = resolve(spec, schema);
    if (depth > 2 && refName) return refName;
    var indent = new Array(depth + 2).join("  ");
    if (schema.type === "array") return "[" + describe(spec, schema.items || {}, depth) + "]";
    if (schema.type === "object" && schema.properties) {
      var required = schema.required || [];
      var lines = Object.keys(schema.properties).map(function (name) {
        var field = schema.properties[name];
        var optional = required.indexOf(name) < 0 ? "?" : "";
        return indent + name + optional + ": " + describe(spec, field, depth + 1);
      });
      return "{\n" + lines.join(",\n") + "\n" + indent.slice(2) + "}";
    }
    if (schema.enum) return schema.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    if (schema.type === "object" && schema.additionalProperties) {
      return "{ [key]: " + describe(spec, schema.additionalProperties, depth + 1) + " }";
    }
    return schema.type || "any JSON value";
  }

  function authLabel(op) {
    var kinds = op["x-key-kinds"] || [];
    if (!kinds.length) return { text: "public, no key", cls: "public" };
    return { text: kinds.join(" or ") + " key", cls: kinds.indexOf("admin") >= 0 ? "admin" : "" };
  }

  function paramTable(spec, params) {
    var table = el("table");
    var head = el("tr");
    ["name", "in", "type", "description"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    params.forEach(function (raw) {
      var p = resolve(spec, raw);
      var row = el("tr");
      var name = el("td");
      name.appendChild(el("code", null, p.name));
      if (p.required) name.appendChild(el("span", "required", " required"));
      row.appendChild(name);
      row.appendChild(el("td", null, p.in));
      var schema = resolve(spec, p.schema || {});
      var type = schema.enum ? schema.enum.join(" | ") : (schema.type || "");
      if (schema.default !== undefined) type += " (default " + schema.default + ")";
      row.appendChild(el("td", null, type));
      row.appendChild(el("td", null, p.description || ""));
      table.appendChild(row);
    });
    return table;
  }

  function renderOp(spec, path, method, op) {
    var details = el("details", "op" + (op.deprecated ? " deprecated" : ""));
    details.id = method + "-" + path.replace(/[^A-Za-z0-9]+/g, "-");
    var summary = el("summary");
    summary.appendChild(el("span", "badge " + method, method.toUpperCase()));
    summary.appendChild(el("span", "path", path));
    summary.appendChild(el("span", "summary", op.summary || ""));
    var auth = authLabel(op);
    summary.appendChild(el("span", "auth " + auth.cls, auth.text));
    details.appendChild(summary);

    var body = el("div", "body");
    if (op.description) body.appendChild(el("p", null, op.description));
    var kinds = op["x-key-kinds"] || [];
    if (kinds.length) {
      var headers = "Authorization: Bearer <key> (or X-API-Key: <key>)";
      if (kinds.indexOf("frontend") >= 0) {
        headers += "; X-User-ID: <user>; with a frontend key also X-User-Signature";
      }
      body.appendChild(el("h4", null, "Authentication"));
      body.appendChild(el("p", null, headers));
    }
    if (op.parameters && op.parameters.length) {
      body.appendChild(el("h4", null, "Parameters"));
      body.appendChild(paramTable(spec, op.parameters));
    }
    if (op.requestBody) {
      var req = resolve(spec, op.requestBody);
      var content = req.content || {};
      Object.keys(content).forEach(function (type) {
        body.appendChild(el("h4", null, "Request body (" + type + ")"));
        body.appendChild(el("pre", null, describe(spec, content[type].schema || {}, 0)));
      });
    }
    body.appendChild(el("h4", null, "Responses"));
    var table = el("table");
    Object.keys(op.responses || {}).forEach(function (status) {
      var response = resolve(spec, op.responses[status]);
      var row = el("tr");
      row.appendChild(el("td", null, status));
      var cell = el("td");
      cell.appendChild(el("div", null, response.description || ""));
      var content = response.content || {};
      Object.keys(content).forEach(function (type) {
        var schema = content[type].schema;
        if (type === "application/json" && schema && !(schema.$ref || "").match(/\/Error$/)) {
          cell.appendChild(el("pre", null, describe(spec, schema, 0)));
        } else if (type !== "application/json") {
          cell.appendChild(el("code", null, type));
        }
      });
      row.appendChild(cell);
      table.appendChild(row);
    });
    body.appendChild(table);
    details.appendChild(body);
    return details;
  }

  function render(spec) {
    var info = spec.info || {};
    document.getElementById("title").textContent = (info.title || "API") + " API reference";
    document.getElementById("version").textContent = "Version " + (info.version || "?") + ", OpenAPI " + spec.openapi + ".";
    var main = document.getElementById("content");
    var toc = document.getElementById("toc");
    main.textContent = "";
    var intro = el("section", "intro");
    (info.description || "").split("\n\n").forEach(function (para) { intro.appendChild(el("p", null, para.replace(/\*\*|\*|`/g, ""))); });
    intro.appendChild(el("h4", null, "Error shape"));
    intro.appendChild(el("pre", null, describe(spec, { $ref: "#/components/schemas/Error" }, 0)));
    main.appendChild(intro);

    var groups = {};
    var order = (spec.tags || []).map(function (t) { return t.name; });
    Object.keys(spec.paths || {}).forEach(function (path) {
      METHODS.forEach(function (method) {
        var op = spec.paths[path][method];
        if (!op) return;
        var tag = (op.tags && op.tags[0]) || "Other";
        if (order.indexOf(tag) < 0) order.push(tag);
        (groups[tag] = groups[tag] || []).push([path, method, op]);
      });
    });
    order.forEach(function (tag) {
      if (!groups[tag]) return;
      main.appendChild(el("h2", "tag", tag));
      toc.appendChild(el("h3", null, tag));
      groups[tag].forEach(function (entry) {
        var node = renderOp(spec, entry[0], entry[1], entry[2]);
        main.appendChild(node);
        var link = el("a", null, entry[1].toUpperCase() + " " + entry[0]);
        link.href = "#" + node.id;
        link.addEventListener("click", function () { node.open = true; });
        toc.appendChild(link);
      });
    });
  }

  fetch(specUrl, { headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) throw new Error("GET " + specUrl + " answered " + response.status);
      return response.json();
    })
    .then(render)
    .catch(function (err) {
      var status = document.getElementById("status");
      status.className = "error";
      status.textContent = "Could not load the API description: " + err.message;
    });
})();
