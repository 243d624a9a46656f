#!/usr/bin/env node
// A static file server for the page, with no dependencies: it serves a folder (default: the repository
// root, so that both examples/web_app/ and runs/<run>/bundle/ are reachable) to this machine only.
// Why not `python -m http.server`: it sends .mjs with a type browsers refuse for modules on some systems,
// and it cannot send the cross-origin isolation headers that let onnxruntime-web use WASM threads.
// All inference runs in the browser; this only hands out files.
//
//   node examples/web_app/serve.mjs [--port 8000] [--host 127.0.0.1] [--root DIR]

import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".svg": "image/svg+xml",
  ".map": "application/json",
};

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8000" },
    host: { type: "string", default: "127.0.0.1" }, // this machine only, unless asked
    root: { type: "string", default: path.resolve(HERE, "..", "..") },
  },
});
const root = path.resolve(values.root);

const server = createServer(async (request, response) => {
  // the page is cross-origin isolated (crossOriginIsolated: true), which WASM threads need
  const headers = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
  };
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.writeHead(405, { ...headers, Allow: "GET, HEAD" }).end();
    return;
  }
  const file = await resolve(request.url);
  if (!file) {
    response.writeHead(404, { ...headers, "Content-Type": "text/plain" }).end("not found\n");
    return;
  }
  response.writeHead(200, {
    ...headers,
    "Content-Type": TYPES[path.extname(file.path).toLowerCase()] ?? "application/octet-stream",
    "Content-Length": file.size,
  });
  if (request.method === "HEAD") response.end();
  else createReadStream(file.path).pipe(response);
});

/** The file a URL names under the root (a folder gives its index.html), or null. */
async function resolve(url) {
  let relative;
  try {
    relative = decodeURIComponent(new URL(url, "http://host").pathname);
  } catch {
    return null;
  }
  // refuse anything that could leave the root before touching the file system
  if (relative.includes("\0") || relative.split("/").some((part) => part === "..")) return null;
  let full = path.join(root, relative);
  try {
    let info = await stat(full);
    if (info.isDirectory()) {
      full = path.join(full, "index.html");
      info = await stat(full);
    }
    return info.isFile() ? { path: full, size: info.size } : null;
  } catch {
    return null;
  }
}

server.listen(Number(values.port), values.host, () => {
  const { port } = server.address();
  // the first line says where: tests start this with --port 0 and read it
  console.log(`serving ${root} at http://${values.host}:${port}/`);
  const page = path.relative(root, HERE);
  if (!page.startsWith("..")) {
    console.log(`the page: http://${values.host}:${port}/${page.split(path.sep).join("/")}/?bundle=<bundle URL>`);
  }
});
