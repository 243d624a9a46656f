// Reads a bundle's manifest.json and the three graphs a web or Node app needs (preprocess_graph,
// the fp32 embedder, head_graph), each checked against its sha256 in manifest.files. Where the bytes
// come from is the caller's: a URL (fetch), a folder the user picked (File objects) or the file system.

const SCHEMA_VERSION = 1; // distilshot/core/manifest.py's SCHEMA_VERSION

/**
 * @param {(name: string) => Promise<Uint8Array>} readFile  bytes of a file of the bundle, by manifest name
 * @returns {Promise<{manifest: object, graphs: {preprocess: Uint8Array, embedder: Uint8Array, head: Uint8Array}, verified: boolean, modelKey: string}>}
 */
export async function loadBundle(readFile) {
  const manifest = parseManifest(new TextDecoder().decode(await readFile("manifest.json")));
  const subtle = globalThis.crypto?.subtle; // absent on plain-http pages that are not localhost
  const graphs = {};
  const files = {
    preprocess: manifest.preprocess_graph.file,
    embedder: manifest.graphs.embedder.file,
    head: manifest.head_graph.file,
  };
  for (const [role, file] of Object.entries(files)) {
    const bytes = await readFile(file);
    if (subtle) {
      const actual = hex(await subtle.digest("SHA-256", bytes));
      if (actual !== manifest.files[file]) {
        throw new Error(
          `bundle file ${file} has sha256 ${actual.slice(0, 12)}…, the manifest says ` +
            `${manifest.files[file].slice(0, 12)}…: the file was changed or corrupted; re-export the bundle`,
        );
      }
    }
    graphs[role] = bytes;
  }
  return { manifest, graphs, verified: Boolean(subtle), modelKey: modelKey(manifest) };
}

/**
 * The key stored classes are kept under: the embedder's sha256 plus the preprocessing graph's (which
 * holds the input size, resize and normalisation), so embeddings of another model, or of the same
 * weights behind other preprocessing, never mix in.
 */
export function modelKey(manifest) {
  return `${manifest.files[manifest.graphs.embedder.file]}+${manifest.files[manifest.preprocess_graph.file]}`;
}

/** Parses and checks what this app relies on; throws an Error naming the first problem. */
export function parseManifest(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (error) {
    throw new Error(`manifest.json is not valid JSON: ${error.message}`);
  }
  if (m === null || typeof m !== "object") throw new Error("manifest.json does not hold a JSON object");
  if (m.schema_version !== SCHEMA_VERSION) {
    throw new Error(`manifest schema_version is ${m.schema_version}; this app reads version ${SCHEMA_VERSION}`);
  }
  const embedder = m.graphs?.embedder;
  if (!embedder || embedder.format !== "onnx" || embedder.precision !== "fp32") {
    throw new Error("the manifest has no fp32 ONNX 'embedder' graph");
  }
  if (!m.preprocess_graph || !m.head_graph) {
    throw new Error(
      "this bundle has no preprocess_graph / head_graph (preprocess.onnx, head.onnx): export it again " +
        "with a distilshot that writes them",
    );
  }
  const prep = m.preprocess_graph;
  if (prep.layout !== "NHWC" || prep.channels !== m.preprocessing.channels || ![1, 3].includes(prep.channels)) {
    throw new Error("preprocess_graph must take NHWC pixels with the preprocessing's 1 or 3 channels");
  }
  const outputs = new Map(embedder.outputs.map((o) => [o.name, o.dim]));
  const weighted = Object.keys(m.head?.weights ?? {});
  if (!weighted.length || weighted.some((o) => !outputs.has(o))) {
    throw new Error(`head.weights must name embedder outputs ${[...outputs.keys()]}`);
  }
  for (const file of [prep.file, embedder.file, m.head_graph.file]) {
    if (typeof m.files?.[file] !== "string") throw new Error(`file ${file} has no sha256 in manifest.files`);
    if (file.startsWith("/") || file.split("/").includes("..")) {
      throw new Error(`manifest lists ${file}, which is outside the bundle`);
    }
  }
  const threshold = m.rejection?.threshold;
  if (threshold !== undefined && threshold !== null && !Number.isFinite(threshold)) {
    throw new Error("rejection.threshold must be a finite number");
  }
  return m;
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}
