// Class means, probabilities and the "unknown" rule, as the Python runtime computes them
// (distilshot/core/head.py, serve/classifier.py): no onnxruntime here, only arithmetic.

/**
 * Classes sorted by name (as the Python store lists them) with each output's prototype: the mean of
 * the class's shot embeddings, summed in float64 and rounded to float32 (head.py's class_mean).
 * @param {{label: string, embeddings: Object<string, Float32Array>}[]} shots
 * @param {{name: string, dim: number}[]} outputs
 */
export function classMeans(shots, outputs) {
  const byLabel = new Map();
  for (const shot of shots) {
    if (!byLabel.has(shot.label)) byLabel.set(shot.label, []);
    byLabel.get(shot.label).push(shot.embeddings);
  }
  // code point order, as Python's sorted(); JS's default sort compares UTF-16 units
  const labels = [...byLabel.keys()].sort((a, b) => {
    const x = [...a].map((c) => c.codePointAt(0));
    const y = [...b].map((c) => c.codePointAt(0));
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  });
  const means = {};
  for (const { name, dim } of outputs) {
    const rows = new Float32Array(labels.length * dim);
    labels.forEach((label, c) => {
      const vectors = byLabel.get(label);
      const sum = new Float64Array(dim);
      for (const v of vectors) for (let j = 0; j < dim; j++) sum[j] += v[name][j];
      for (let j = 0; j < dim; j++) rows[c * dim + j] = sum[j] / vectors.length; // Float32Array rounds
    });
    means[name] = rows;
  }
  return { labels, means };
}

/** Softmax in float64 (head.py's softmax): the head graph already divides by the calibrated temperature. */
export function softmax(logits) {
  const max = Math.max(...logits);
  const e = Array.from(logits, (z) => Math.exp(z - max));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

/**
 * One query's answer: the `topK` classes by probability, and `unknown` when the best logit is below the
 * bundle's rejection threshold (the label is then null: never a confident label for an unknown).
 * The record has the fields of the Python Prediction.to_dict().
 */
export function prediction(image, logits, labels, threshold, topK = 5) {
  const probabilities = softmax(logits);
  const order = labels.map((_, c) => c).sort((a, b) => probabilities[b] - probabilities[a] || a - b);
  const best = order.slice(0, Math.min(topK, labels.length));
  const unknown = threshold !== null && logits[best[0]] < threshold;
  return {
    image,
    label: unknown ? null : labels[best[0]],
    unknown,
    threshold,
    top_k: best.map((c) => ({ label: labels[c], score: probabilities[c], logit: logits[c] })),
  };
}
