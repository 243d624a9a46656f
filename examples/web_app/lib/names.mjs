// Class names, checked as the Python store checks them (serve/store): Unicode NFC, so "café" typed
// composed or decomposed is one class; no control, invisible or direction-changing characters.

const MAX_LENGTH = 100;
const FORBIDDEN = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\u2028\u2029/\\]/u;

/** The normalised name, or throws an Error saying what is wrong with it. */
export function className(raw) {
  const name = raw.normalize("NFC");
  if (!name) throw new Error("give the class a name");
  if (name.trim() !== name) throw new Error("a class name must not start or end with spaces");
  if ([...name].length > MAX_LENGTH) throw new Error(`a class name has at most ${MAX_LENGTH} characters`);
  if (FORBIDDEN.test(name)) {
    throw new Error("a class name must not hold path separators, control or invisible characters");
  }
  return name;
}
