// Loads onnxruntime-web from the page's own node_modules (nothing from a CDN: the page works offline).
// WebGPU where the browser has a GPU adapter, else WASM: the two builds are separate files, so a
// browser without WebGPU downloads only the smaller WASM build (14 MB instead of 27 MB).

const DIST = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url);

/**
 * @param {"auto"|"wasm"|"webgpu"} preference  ?ep= in the page URL; "auto" tries WebGPU first
 * @returns {Promise<{ort: object, executionProviders: string[], backend: string}>}
 */
export async function loadRuntime(preference = "auto") {
  const webgpu = preference !== "wasm" && (await hasWebGpu());
  if (preference === "webgpu" && !webgpu) throw new Error("this browser has no WebGPU adapter; try ?ep=wasm");
  let ort;
  try {
    ort = await import(new URL(webgpu ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs", DIST).href);
  } catch (error) {
    throw new Error(
      "cannot load onnxruntime-web from examples/web_app/node_modules: run `npm ci --prefix examples/web_app` " +
        `(\`make install\` does) (${error.message})`,
    );
  }
  ort.env.wasm.wasmPaths = DIST.href;
  // threads need a cross-origin isolated page (serve.mjs sends the headers); otherwise one thread
  ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const threads = ort.env.wasm.numThreads;
  return {
    ort,
    // WebGPU runs the embedder and head; nodes it lacks fall back to WASM
    executionProviders: webgpu ? ["webgpu", "wasm"] : ["wasm"],
    backend: webgpu ? `WebGPU (+ WASM, ${threads} thread${threads > 1 ? "s" : ""})` : `WASM, ${threads} thread${threads > 1 ? "s" : ""}`,
  };
}

async function hasWebGpu() {
  if (!navigator.gpu) return false;
  try {
    return Boolean(await navigator.gpu.requestAdapter());
  } catch {
    return false;
  }
}
