// Registered shots in IndexedDB: embeddings (Float32Array per embedder output) and a small thumbnail,
// under the model key (lib/bundle.mjs's modelKey), so opening another bundle never mixes its
// embeddings with these; they stay in the browser and survive reloads and going offline.

const DB_NAME = "distilshot-web-app";
const DB_VERSION = 1;
const SHOTS = "shots";

export class ShotStore {
  /** Opens the store of model `modelKey` (the database is shared; every record names its model). */
  static async open(modelKey) {
    const db = await request(
      Object.assign(indexedDB.open(DB_NAME, DB_VERSION), {
        onupgradeneeded: (event) => {
          const shots = event.target.result.createObjectStore(SHOTS, { keyPath: "id", autoIncrement: true });
          shots.createIndex("model", "model");
        },
      }),
    );
    return new ShotStore(db, modelKey);
  }

  constructor(db, modelKey) {
    this.db = db;
    this.modelKey = modelKey;
  }

  /** Every shot of this model: {id, label, source, thumbnail, embeddings, added}. */
  async shots() {
    const index = this.db.transaction(SHOTS).objectStore(SHOTS).index("model");
    return request(index.getAll(IDBKeyRange.only(this.modelKey)));
  }

  /** Adds the shots of one class in one transaction: all of them or, on an error, none. */
  async add(label, shots) {
    const tx = this.db.transaction(SHOTS, "readwrite");
    const store = tx.objectStore(SHOTS);
    for (const shot of shots) store.add({ ...shot, label, model: this.modelKey, added: Date.now() });
    await done(tx);
  }

  /** Removes every shot of class `label` of this model. */
  async removeClass(label) {
    const shots = (await this.shots()).filter((s) => s.label === label);
    const tx = this.db.transaction(SHOTS, "readwrite");
    for (const shot of shots) tx.objectStore(SHOTS).delete(shot.id);
    await done(tx);
  }

  close() {
    this.db.close();
  }
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = tx.onerror = () => reject(tx.error ?? new Error("the IndexedDB transaction was aborted"));
  });
}
