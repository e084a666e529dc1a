// A small time-series line chart drawn on a <canvas>: no library.

export const COLORS = ["#2b7bb9", "#2e9d57", "#d98c1f"];

function niceCeiling(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function label(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

export class LineChart {
  // `series`: the names of the lines; `span`: seconds of history kept and shown.
  constructor(canvas, legend, series, span = 300) {
    this.canvas = canvas;
    this.series = series;
    this.span = span;
    this.points = []; // [t (seconds), [values...]]
    this.legendItems = series.map((name, i) => {
      const item = document.createElement("span");
      item.className = "s" + i;
      item.textContent = name;
      legend.append(item);
      return item;
    });
  }

  clear() {
    this.points = [];
    this.draw();
  }

  push(t, values) {
    this.points.push([t, values]);
    while (this.points.length && this.points[0][0] < t - this.span) this.points.shift();
    this.legendItems.forEach((item, i) => {
      item.textContent = `${this.series[i]}: ${label(values[i])}`;
    });
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 400;
    const height = canvas.clientHeight || 200;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 44, right = 8, top = 8, bottom = 20;
    const w = width - left - right, h = height - top - bottom;
    let max = 0;
    for (const [, values] of this.points) for (const v of values) max = Math.max(max, v);
    max = niceCeiling(max);
    const now = this.points.length ? this.points[this.points.length - 1][0] : 0;
    // the window shown grows with the history, from a minute up to `span`
    const age = this.points.length ? now - this.points[0][0] : 0;
    const shown = Math.min(this.span, Math.max(60, Math.ceil(age / 60) * 60));
    const x = (t) => left + w - ((now - t) / shown) * w;
    const y = (v) => top + h - (v / max) * h;
    // grid and axes
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#66707d";
    g.strokeStyle = "#e3e7ec";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(left + w, yy);
      g.stroke();
      g.fillText(label(v), left - 6, yy);
    }
    g.textBaseline = "top";
    const step = shown <= 60 ? 10 : 60;
    for (let s = 0; s <= shown; s += step) {
      const xx = left + w - (s / shown) * w;
      g.textAlign = s === 0 ? "right" : "center";
      g.fillText(s === 0 ? "now" : step < 60 ? `-${s}s` : `-${s / 60}m`, xx, top + h + 4);
    }
    // the lines
    g.lineWidth = 2;
    g.lineJoin = "round";
    this.series.forEach((_, i) => {
      if (this.points.length < 1) return;
      g.strokeStyle = COLORS[i % COLORS.length];
      g.beginPath();
      this.points.forEach(([t, values], k) => {
        if (k === 0) g.moveTo(x(t), y(values[i]));
        else g.lineTo(x(t), y(values[i]));
      });
      if (this.points.length === 1) g.lineTo(x(now) - 2, y(this.points[0][1][i]));
      g.stroke();
    });
    canvas.dataset.points = String(this.points.length);
  }
}
