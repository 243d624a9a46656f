// The page: load a bundle, register classes (files, camera, drawing pad), keep them in IndexedDB,
// classify, show calibrated probabilities and "unknown". Everything runs in this browser tab.

import { loadBundle } from "./bundle.mjs";
import { Camera } from "./camera.mjs";
import { DrawPad } from "./drawpad.mjs";
import { classMeans, prediction } from "./head.mjs";
import { decodeFile, fromDrawable } from "./images.mjs";
import { FewShotModel } from "./model.mjs";
import { className } from "./names.mjs";
import { flattenRgba } from "./pixels.mjs";
import { loadRuntime } from "./runtime.mjs";
import { ShotStore } from "./store.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { runtime: null, model: null, store: null, shots: [], pending: [], timings: {} };
// for tests and the curious: what the page measured (ms)
globalThis.distilshot = state;

function status(text, kind = "info") {
  $("status").textContent = text;
  $("status").dataset.kind = kind;
}

/** Runs `action`, showing its error in the status line instead of losing it in the console. */
async function guarded(action) {
  try {
    await action();
  } catch (error) {
    console.error(error);
    status(error.message, "error");
  }
}

// -- the bundle ---------------------------------------------------------------------------------------

async function openBundle(readFile, where) {
  const started = performance.now();
  status(`loading the model from ${where}…`);
  state.runtime ??= await loadRuntime(params.get("ep") ?? "auto");
  const bundle = await loadBundle(readFile);
  const model = await FewShotModel.create(state.runtime.ort, bundle, state.runtime.executionProviders);
  state.store?.close();
  state.model = model;
  state.store = await ShotStore.open(bundle.modelKey);
  state.shots = await state.store.shots();
  state.timings.load_ms = performance.now() - started;
  state.timings.ready_ms ??= performance.now(); // since the page began to load
  showModel(bundle, where);
  showClasses();
  document.body.dataset.ready = "true";
  status(`ready: ${classCount()} registered`);
}

/** `?bundle=` is a URL relative to this page, e.g. ../../runs/<run>/bundle/ */
function urlReader(base) {
  const folder = new URL(base.endsWith("/") ? base : base + "/", location.href);
  return async (name) => {
    const response = await fetch(new URL(name, folder));
    if (!response.ok) throw new Error(`cannot fetch ${name} from ${folder}: HTTP ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  };
}

/** A folder picked with <input webkitdirectory>: its files by path below the folder holding manifest.json. */
function folderReader(files) {
  const paths = new Map([...files].map((f) => [f.webkitRelativePath || f.name, f]));
  const manifests = [...paths.keys()].filter((p) => p === "manifest.json" || p.endsWith("/manifest.json"));
  if (!manifests.length) throw new Error("the chosen folder has no manifest.json: pick a bundle folder");
  manifests.sort((a, b) => a.split("/").length - b.split("/").length);
  const root = manifests[0].slice(0, -"manifest.json".length);
  return async (name) => {
    const file = paths.get(root + name);
    if (!file) throw new Error(`the bundle folder has no ${name}`);
    return new Uint8Array(await file.arrayBuffer());
  };
}

function showModel(bundle, where) {
  const m = bundle.manifest;
  const p = m.preprocessing;
  const rows = [
    ["model", `${m.name} (${m.method}, ${m.backbone}, trained on ${m.dataset})`],
    ["from", where],
    ["input", `${p.width}×${p.height} ${p.channels === 1 ? "grey" : "RGB"}`],
    ["runs on", state.runtime.backend],
    [
      "unknown",
      m.rejection
        ? `best logit below ${m.rejection.threshold.toFixed(3)}: ${pct(m.rejection.known_accepted)} of known ` +
          `queries accepted, ${pct(m.rejection.unknown_rejected)} of unknown ones rejected (held-out classes)`
        : "this bundle has no rejection threshold: every query gets a label",
    ],
    [
      "scores",
      m.calibration
        ? `probabilities at the calibrated temperature (ECE ${m.calibration.ece.toFixed(3)}, ` +
          `uncalibrated ${m.calibration.ece_uncalibrated.toFixed(3)})`
        : "softmax probabilities at the head's temperature",
    ],
    ["files", bundle.verified ? "sha256 verified" : "not verified (crypto.subtle needs https or localhost)"],
  ];
  $("model-card").replaceChildren(
    ...rows.flatMap(([key, value]) => [element("dt", key), element("dd", value)]),
  );
}

// -- registering --------------------------------------------------------------------------------------

async function addPending(pictures) {
  state.pending.push(...pictures);
  showPending();
  status(`${state.pending.length} image${state.pending.length === 1 ? "" : "s"} ready to register`);
}

function showPending() {
  $("pending").replaceChildren(...state.pending.map((p) => image(p.thumbnail, p.name)));
  $("register").disabled = !state.pending.length;
}

async function register() {
  requireModel();
  const label = className($("class-name").value);
  if (!state.pending.length) throw new Error("add images first: files, a drawing or a camera frame");
  const shots = [];
  for (const picture of state.pending) {
    shots.push({ source: picture.name, thumbnail: picture.thumbnail, embeddings: await embed(picture) });
  }
  await state.store.add(label, shots);
  state.shots = await state.store.shots();
  state.pending = [];
  showPending();
  showClasses();
  $("support-files").value = "";
  $("class-name").value = "";
  status(`registered ${label} with ${shots.length} image${shots.length === 1 ? "" : "s"}: ${classCount()} registered`);
}

function showClasses() {
  const byLabel = new Map();
  for (const shot of state.shots) byLabel.set(shot.label, [...(byLabel.get(shot.label) ?? []), shot]);
  const labels = [...byLabel.keys()].sort();
  $("classes").replaceChildren(
    ...labels.map((label) => {
      const shots = byLabel.get(label);
      const remove = element("button", "remove");
      remove.className = "small";
      remove.addEventListener("click", () =>
        guarded(async () => {
          await state.store.removeClass(label);
          state.shots = await state.store.shots();
          showClasses();
          status(`removed ${label}: ${classCount()} registered`);
        }),
      );
      const item = element("li", "");
      item.dataset.label = label;
      item.append(
        element("span", `${label} (${shots.length} shot${shots.length === 1 ? "" : "s"})`),
        ...shots.slice(0, 8).map((s) => image(s.thumbnail, s.source)),
        remove,
      );
      return item;
    }),
  );
  $("classes-empty").hidden = labels.length > 0;
}

// -- classifying --------------------------------------------------------------------------------------

async function classify(pictures) {
  requireModel();
  if (!state.shots.length) throw new Error("register at least one class first");
  const classes = classMeans(state.shots, state.model.outputs);
  const cards = [];
  for (const picture of pictures) {
    const started = performance.now();
    const [logits] = await state.model.logits([await embed(picture)], classes);
    const answer = prediction(picture.name, logits, classes.labels, state.model.threshold);
    const ms = performance.now() - started;
    // from the start of the page load to the first answer shown
    state.timings.first_classification_ms ??= performance.now();
    (state.timings.classify_ms ??= []).push(ms);
    cards.push(resultCard(picture, answer, ms, classes.labels.length));
  }
  $("results").prepend(...cards);
  status(`classified ${pictures.length} image${pictures.length === 1 ? "" : "s"} against ${classes.labels.length} classes`);
}

function resultCard(picture, answer, ms, classCount) {
  const card = element("article", "");
  card.className = "result";
  // the full answer for tests and scripts; the text below is for people
  card.dataset.image = answer.image;
  card.dataset.label = answer.label ?? "";
  card.dataset.unknown = String(answer.unknown);
  card.dataset.prediction = JSON.stringify(answer);
  const best = answer.top_k[0];
  const heading = element("h3", "");
  heading.append("Answer: ", element("strong", answer.unknown ? "unknown" : answer.label));
  if (answer.unknown) heading.classList.add("unknown");
  const note = answer.unknown
    ? `not like any registered class: the closest, ${best.label} (${pct(best.score)}), has logit ` +
      `${best.logit.toFixed(2)}, below the threshold ${answer.threshold.toFixed(2)}`
    : `probability ${pct(best.score)} among the ${classCount} registered classes`;
  const bars = element("ol", "");
  bars.className = "scores";
  for (const { label, score } of answer.top_k) {
    const row = element("li", "");
    const bar = element("span", "");
    bar.className = "bar";
    bar.style.setProperty("--p", String(score));
    row.append(element("span", label), bar, element("span", pct(score)));
    bars.append(row);
  }
  const body = element("div", "");
  body.append(heading, element("p", note), bars, element("p", `${picture.name} · ${ms.toFixed(0)} ms`));
  card.append(image(picture.thumbnail, picture.name), body);
  return card;
}

// -- shared -------------------------------------------------------------------------------------------

async function embed(picture) {
  const pixels = flattenRgba(picture.rgba, picture.width, picture.height, state.model.channels);
  return state.model.embed(pixels, picture.width, picture.height);
}

async function decodeAll(fileList) {
  const pictures = [];
  for (const file of fileList) pictures.push(await decodeFile(file));
  return pictures;
}

function requireModel() {
  if (!state.model) throw new Error("open a bundle first (a folder, or ?bundle=<url> in the address)");
}

/** "N classes", for the status line */
function classCount() {
  const n = new Set(state.shots.map((s) => s.label)).size;
  return `${n} class${n === 1 ? "" : "es"}`;
}

function pct(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function element(tag, text) {
  const e = document.createElement(tag);
  e.textContent = text;
  return e;
}

function image(src, title) {
  const img = element("img", "");
  img.src = src;
  img.alt = img.title = title;
  return img;
}

// -- wiring -------------------------------------------------------------------------------------------

const pad = new DrawPad($("pad"));
const camera = new Camera($("camera"));
let drawings = 0;

function padPicture() {
  if (!pad.drawn) throw new Error("draw something on the pad first");
  drawings += 1;
  return fromDrawable($("pad"), $("pad").width, $("pad").height, `drawing ${drawings}`);
}

function cameraPicture() {
  if (!camera.running) throw new Error("start the camera first");
  const { videoWidth: w, videoHeight: h } = $("camera");
  return fromDrawable($("camera"), w, h, `camera ${new Date().toLocaleTimeString()}`);
}

$("support-files").addEventListener("change", (e) => guarded(async () => addPending(await decodeAll(e.target.files))));
$("query-files").addEventListener("change", (e) =>
  guarded(async () => {
    await classify(await decodeAll(e.target.files));
    e.target.value = "";
  }),
);
$("register").addEventListener("click", () => guarded(register));
$("pad-add").addEventListener("click", () => guarded(async () => (addPending([padPicture()]), pad.clear())));
$("pad-classify").addEventListener("click", () => guarded(async () => classify([padPicture()])));
$("pad-clear").addEventListener("click", () => pad.clear());
$("camera-start").addEventListener("click", () =>
  guarded(async () => {
    if (camera.running) camera.stop();
    else await camera.start();
    $("camera-start").textContent = camera.running ? "Stop camera" : "Start camera";
  }),
);
$("camera-add").addEventListener("click", () => guarded(async () => addPending([cameraPicture()])));
$("camera-classify").addEventListener("click", () => guarded(async () => classify([cameraPicture()])));
$("bundle-folder").addEventListener("change", (e) =>
  guarded(async () => openBundle(folderReader(e.target.files), `the folder ${e.target.files[0]?.webkitRelativePath.split("/")[0]}`)),
);

const bundleUrl = params.get("bundle");
if (bundleUrl) guarded(() => openBundle(urlReader(bundleUrl), bundleUrl));
else status("open a bundle folder below, or give its URL as ?bundle=<url relative to this page>");
