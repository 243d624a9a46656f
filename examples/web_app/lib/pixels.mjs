// RGBA pixels (what a canvas's getImageData or a PNG decoder hands out) -> the bundle's channels, with
// the integer formulas of export/pixels_graph.py's docstring (Pillow's arithmetic), so the uint8 pixels
// given to preprocess.onnx are the ones the Python runtime feeds its own resize. Shared by the page and
// the Node client; no DOM, no onnxruntime.

// Python refuses images with a side below serve/images.py's MIN_SIDE; so do we, with the same limit.
export const MIN_SIDE = 8;
// serve/images.py's MAX_PIXELS: larger images are refused rather than decoded into gigabytes.
export const MAX_PIXELS = 40_000_000;

/**
 * Composites RGBA over opaque white and converts to `channels` (1 = Pillow "L" luma, 3 = RGB).
 * @param {Uint8Array|Uint8ClampedArray} rgba  width * height * 4 values, rows top to bottom
 * @returns {Uint8Array} width * height * channels values (NHWC for one image)
 */
export function flattenRgba(rgba, width, height, channels) {
  checkSize(width, height);
  if (rgba.length !== width * height * 4) {
    throw new Error(`expected ${width * height * 4} RGBA values for ${width}x${height}, got ${rgba.length}`);
  }
  if (channels !== 1 && channels !== 3) throw new Error(`channels must be 1 or 3, not ${channels}`);
  const count = width * height;
  const out = new Uint8Array(count * channels);
  for (let i = 0; i < count; i++) {
    const a = rgba[4 * i + 3];
    // c' = (c * a + 255 * (255 - a) + 127) // 255: Pillow's alpha_composite over white, exactly; a = 255 keeps c
    const paper = 255 * (255 - a) + 127;
    const r = Math.floor((rgba[4 * i] * a + paper) / 255);
    const g = Math.floor((rgba[4 * i + 1] * a + paper) / 255);
    const b = Math.floor((rgba[4 * i + 2] * a + paper) / 255);
    if (channels === 1) {
      // ITU-R 601-2 luma in Pillow's fixed point: (19595 R + 38470 G + 7471 B + 32768) >> 16
      out[i] = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16;
    } else {
      out[3 * i] = r;
      out[3 * i + 1] = g;
      out[3 * i + 2] = b;
    }
  }
  return out;
}

export function checkSize(width, height) {
  if (!(width >= MIN_SIDE && height >= MIN_SIDE)) {
    throw new Error(`image is ${width}x${height}; both sides must be at least ${MIN_SIDE} pixels`);
  }
  if (width * height > MAX_PIXELS) {
    throw new Error(`image is ${width}x${height}, over ${MAX_PIXELS} pixels`);
  }
}
