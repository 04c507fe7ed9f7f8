// Renders every Vega-Lite plot of a `dvc plots show` page with the page's own inlined scripts, in Node,
// with no browser and no network: prints {plot id: data marks drawn} as JSON, exits 1 on any failure.
// Usage: node render_plots.js dvc_plots/index.html
"use strict";
const fs = require("fs");
const vm = require("vm");

async function main(page) {
  const html = fs.readFileSync(page, "utf8");
  const inline = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
  // A browser's globals a script may touch on loading; no fetch, so nothing can be downloaded.
  const globals = ["console", "setTimeout", "clearTimeout", "setInterval", "clearInterval", "queueMicrotask",
    "structuredClone", "URL", "URLSearchParams", "TextEncoder", "TextDecoder", "performance"];
  const context = vm.createContext(Object.fromEntries(globals.map((name) => [name, globalThis[name]])));
  context.globalThis = context;
  context.self = context;
  for (const code of inline) vm.runInContext(code, context); // vega, vega-lite, vega-embed (needs no DOM to load)
  if (!context.vega || !context.vegaLite) throw new Error("the page's scripts define no vega / vegaLite");
  const plots = [...html.matchAll(/<div id = "([^"]+)">\s*<script type = "text\/javascript">\s*var spec = ([\s\S]*?);\s*vegaEmbed\(/g)];
  if (plots.length === 0) throw new Error("no Vega plot on the page");
  const drawn = {};
  for (const [, id, spec] of plots) {
    const compiled = context.vegaLite.compile(JSON.parse(spec)).spec;
    const view = new context.vega.View(context.vega.parse(compiled), { renderer: "none" });
    await view.runAsync();
    drawn[id] = countMarks(view.scenegraph().root);
    await view.toSVG(); // the SVG renderer draws it whole
    view.finalize();
  }
  console.log(JSON.stringify(drawn));
}

// Items of data marks (role "mark"): axes, legends and titles have roles of their own.
function countMarks(mark) {
  let count = 0;
  for (const item of mark.items || []) {
    if (mark.marktype === "group") for (const child of item.items || []) count += countMarks(child);
    else if (mark.role === "mark") count += 1;
  }
  return count;
}

main(process.argv[2]).catch((error) => {
  console.error(String(error && error.message ? error.message : error).slice(0, 2000)); // not the minified source
  process.exit(1);
});
