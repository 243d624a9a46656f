// A drawing pad: black strokes on an opaque white canvas (the Omniglot look: dark ink on white paper),
// drawn with a mouse, pen or finger through pointer events.

export class DrawPad {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { willReadFrequently: true });
    this.drawn = false;
    this.clear();
    let last = null;
    const point = (event) => {
      // the canvas may be shown at another size than its pixels
      const box = canvas.getBoundingClientRect();
      return [((event.clientX - box.left) * canvas.width) / box.width, ((event.clientY - box.top) * canvas.height) / box.height];
    };
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      last = point(event);
      this.stroke(last, last);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (last === null) return;
      const next = point(event);
      this.stroke(last, next);
      last = next;
    });
    const end = () => (last = null);
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
  }

  stroke([x0, y0], [x1, y1]) {
    const c = this.context;
    c.strokeStyle = "#000";
    c.lineCap = c.lineJoin = "round";
    // about as thick relative to the pad as an Omniglot pen stroke is in its 105 px drawings
    c.lineWidth = this.canvas.width / 35;
    c.beginPath();
    c.moveTo(x0, y0);
    c.lineTo(x1, y1);
    c.stroke();
    this.drawn = true;
  }

  clear() {
    this.context.fillStyle = "#fff";
    this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.drawn = false;
  }
}
