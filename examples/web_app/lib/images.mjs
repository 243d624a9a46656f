// Images in the browser: decoded by the browser itself (createImageBitmap), read back as RGBA with a
// canvas's getImageData, plus small thumbnails for the gallery. The conversion to the model's pixels
// is lib/pixels.mjs's, in Pillow's integer formulas.

import { checkSize } from "./pixels.mjs";

const MAX_BYTES = 20 * 1024 * 1024; // serve/images.py's MAX_BYTES
const THUMBNAIL_SIDE = 64;

/**
 * @typedef {{name: string, width: number, height: number, rgba: Uint8ClampedArray, thumbnail: string}} Picture
 */

/** Decodes an image file (PNG, JPEG, WebP, GIF, BMP: whatever the browser reads) into a Picture. */
export async function decodeFile(file) {
  if (file.size > MAX_BYTES) throw new Error(`${file.name} is over ${MAX_BYTES / 1024 / 1024} MB`);
  let bitmap;
  try {
    // no colour management (Pillow applies none) and straight alpha; EXIF orientation applied as Pillow's
    // exif_transpose does
    bitmap = await createImageBitmap(file, {
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
      imageOrientation: "from-image",
    });
  } catch {
    throw new Error(`${file.name} is not an image this browser can decode`);
  }
  try {
    checkSize(bitmap.width, bitmap.height);
    return fromDrawable(bitmap, bitmap.width, bitmap.height, file.name);
  } catch (error) {
    throw new Error(`${file.name}: ${error.message}`);
  } finally {
    bitmap.close();
  }
}

/**
 * A Picture of anything a canvas can draw (a bitmap, a video frame, another canvas), `width` x `height`.
 * A canvas keeps colours premultiplied by alpha, so half-transparent pixels may read back one level off
 * what the file holds (opaque pixels read back exactly); after compositing over white the difference is
 * at most one level.
 */
export function fromDrawable(source, width, height, name) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  context.drawImage(source, 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height, { colorSpace: "srgb" }).data;
  return { name, width, height, rgba, thumbnail: thumbnail(canvas) };
}

/** A PNG data URL of `canvas` fitted into THUMBNAIL_SIDE pixels, over white as the model sees it. */
export function thumbnail(canvas) {
  const scale = Math.min(1, THUMBNAIL_SIDE / Math.max(canvas.width, canvas.height));
  const small = document.createElement("canvas");
  small.width = Math.max(1, Math.round(canvas.width * scale));
  small.height = Math.max(1, Math.round(canvas.height * scale));
  const context = small.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, small.width, small.height);
  context.imageSmoothingQuality = "high";
  context.drawImage(canvas, 0, 0, small.width, small.height);
  return small.toDataURL("image/png");
}
