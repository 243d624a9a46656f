// The bundle's three graphs chained: uint8 pixels -> preprocess.onnx -> embedder.onnx -> embeddings, and
// embeddings + class means -> head.onnx -> logits. `ort` is onnxruntime-web or onnxruntime-node (same
// API), passed in so that the page and the Node client run this same code.

export class FewShotModel {
  /**
   * @param ort  the onnxruntime module
   * @param bundle  what loadBundle returned
   * @param {string[]} executionProviders  for the embedder and the head, e.g. ["webgpu", "wasm"]
   */
  static async create(ort, bundle, executionProviders = ["cpu"]) {
    const { manifest, graphs } = bundle;
    // The preprocessing always runs on the CPU provider ("wasm" in a browser): its uint8 antialiased
    // Resize is the Pillow-equivalent fixed-point path there, which a GPU provider would not run.
    const cpu = executionProviders.includes("wasm") ? ["wasm"] : ["cpu"];
    const [preprocess, embedder, head] = await Promise.all([
      ort.InferenceSession.create(graphs.preprocess, { executionProviders: cpu }),
      ort.InferenceSession.create(graphs.embedder, { executionProviders }),
      ort.InferenceSession.create(graphs.head, { executionProviders }),
    ]);
    return new FewShotModel(ort, manifest, { preprocess, embedder, head });
  }

  constructor(ort, manifest, sessions) {
    this.ort = ort;
    this.manifest = manifest;
    this.sessions = sessions;
    this.channels = manifest.preprocess_graph.channels;
    this.outputs = manifest.graphs.embedder.outputs; // [{name, dim}], all stored per shot
    this.weighted = Object.keys(manifest.head.weights); // the outputs the head reads
    const threshold = manifest.rejection?.threshold;
    this.threshold = Number.isFinite(threshold) ? threshold : null;
  }

  /**
   * Embeddings of one image.
   * @param {Uint8Array} pixels  height * width * channels values, channels last (see pixels.mjs)
   * @returns {Promise<Object<string, Float32Array>>} per embedder output, its [dim] vector
   */
  async embed(pixels, width, height) {
    const { ort, sessions, manifest } = this;
    const feeds = {
      [manifest.preprocess_graph.input]: new ort.Tensor("uint8", pixels, [1, height, width, this.channels]),
    };
    const prepared = await sessions.preprocess.run(feeds);
    const input = prepared[sessions.preprocess.outputNames[0]];
    const embedded = await sessions.embedder.run({ [manifest.graphs.embedder.input]: input });
    const result = {};
    for (const { name, dim } of this.outputs) {
      const data = embedded[name].data;
      if (data.length !== dim) throw new Error(`embedder output ${name} has ${data.length} values, not ${dim}`);
      result[name] = Float32Array.from(data);
    }
    return result;
  }

  /**
   * Head logits of queries against class means, in the classes' order.
   * @param {Object<string, Float32Array>[]} queries  embeddings, one object per query
   * @param {{labels: string[], means: Object<string, Float32Array>}} classes  from classMeans
   * @returns {Promise<Float32Array[]>} one row of logits per query
   */
  async logits(queries, classes) {
    const { ort, manifest } = this;
    const k = classes.labels.length;
    const feeds = {};
    for (const output of this.weighted) {
      const dim = this.outputs.find((o) => o.name === output).dim;
      const stacked = new Float32Array(queries.length * dim);
      queries.forEach((q, i) => stacked.set(q[output], i * dim));
      feeds[output] = new ort.Tensor("float32", stacked, [queries.length, dim]);
      const suffix = manifest.head_graph.prototypes_suffix;
      feeds[output + suffix] = new ort.Tensor("float32", classes.means[output], [k, dim]);
    }
    const result = await this.sessions.head.run(feeds);
    const flat = result[manifest.head_graph.output].data;
    return queries.map((_, i) => Float32Array.from(flat.subarray(i * k, (i + 1) * k)));
  }
}
