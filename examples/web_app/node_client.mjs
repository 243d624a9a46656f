#!/usr/bin/env node
// A Node client of a distilshot bundle that needs nothing but onnxruntime-node and pngjs: it reads
// manifest.json and the graphs it names (preprocess.onnx, embedder.onnx, head.onnx), registers classes
// from PNG files and prints embeddings and predictions as one JSON object. The tests compare it with the
// Python runtime; it runs the same lib/ modules as the page.
//
//   node node_client.mjs --bundle B [--class NAME=a.png,b.png]... [--top-k 5] [--embeddings] q1.png ...

import { readFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import pngjs from "pngjs";

import { loadBundle } from "./lib/bundle.mjs";
import { classMeans, prediction } from "./lib/head.mjs";
import { FewShotModel } from "./lib/model.mjs";
import { flattenRgba } from "./lib/pixels.mjs";

const USAGE =
  "usage: node node_client.mjs --bundle DIR [--class NAME=a.png,b.png]... [--top-k N] [--embeddings] QUERY.png...";

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      bundle: { type: "string" },
      class: { type: "string", multiple: true, default: [] },
      "top-k": { type: "string", default: "5" },
      embeddings: { type: "boolean", default: false },
    },
  });
  const topK = Number(values["top-k"]);
  if (!values.bundle || !Number.isInteger(topK) || topK < 1) throw new Error(USAGE);
  const bundleDir = values.bundle;
  const bundle = await loadBundle((name) => readFile(path.join(bundleDir, name)));
  const model = await FewShotModel.create(ort, bundle, ["cpu"]);

  const support = values.class.map(parseClass).flatMap(({ label, files }) => files.map((f) => ({ label, f })));
  const shots = [];
  for (const { label, f } of support) shots.push({ label, image: f, embeddings: await embedFile(model, f) });
  const queries = [];
  for (const f of positionals) queries.push({ image: f, embeddings: await embedFile(model, f) });

  const output = { model: bundle.modelKey, verified: bundle.verified };
  if (values.embeddings) {
    output.embeddings = [...shots, ...queries].map(({ image, embeddings }) => ({
      image,
      outputs: Object.fromEntries(Object.entries(embeddings).map(([o, v]) => [o, Array.from(v)])),
    }));
  }
  if (shots.length && queries.length) {
    const classes = classMeans(shots, model.outputs);
    const logits = await model.logits(queries.map((q) => q.embeddings), classes);
    output.predictions = queries.map((q, i) => prediction(q.image, logits[i], classes.labels, model.threshold, topK));
  }
  process.stdout.write(JSON.stringify(output) + "\n");
}

function parseClass(spec) {
  const at = spec.indexOf("=");
  if (at < 1 || at === spec.length - 1) throw new Error(`--class wants NAME=a.png[,b.png], not ${spec}`);
  return { label: spec.slice(0, at), files: spec.slice(at + 1).split(",") };
}

/** Decodes a PNG to 8-bit RGBA (pngjs expands grey, palette and transparency) and embeds it. */
async function embedFile(model, file) {
  let png;
  try {
    png = pngjs.PNG.sync.read(await readFile(file));
  } catch (error) {
    throw new Error(`cannot decode ${file} as PNG: ${error.message}`);
  }
  const pixels = flattenRgba(png.data, png.width, png.height, model.channels);
  return model.embed(pixels, png.width, png.height);
}

main().catch((error) => {
  process.stderr.write(`error: ${error.message}\n`);
  process.exit(2);
});
