// A run's page: its stage timeline and chunk throughput, drawn as SVG from /api/runs/{id};
// redrawn every 2 s while the run is running or paused. Text goes in as text, never markup.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fde", "#1a7f37", "#b26a00", "#8e44ad", "#c62828", "#00838f", "#6d4c41"];
  const STATUS = { completed: "#1a7f37", failed: "#c62828", running: "#2f6fde", "not started": "#9aa5b4" };
  const api = document.querySelector("p.run").dataset.api;

  function el(parent, name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    parent.appendChild(node);
    return node;
  }

  function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

  // Stages side by side along the run's processing time (each stage's reported time).
  function timeline(run) {
    const svg = document.getElementById("timeline");
    clear(svg);
    const width = svg.clientWidth || 900, left = 130, right = 170, bar = 18, gap = 6;
    const total = run.stages.reduce((sum, s) => sum + s.processing_time_ms, 0) || 1;
    const height = 30 + run.stages.length * (bar + gap);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.style.height = height + "px";
    let offset = 0;
    run.stages.forEach(function (stage, index) {
      const y = 8 + index * (bar + gap);
      const x = left + (offset / total) * (width - left - right);
      const w = Math.max(2, (stage.processing_time_ms / total) * (width - left - right));
      el(svg, "text", { x: 6, y: y + 13 }, stage.stage_name);
      const rect = el(svg, "rect", { x: x, y: y, width: w, height: bar, rx: 3,
        fill: STATUS[stage.status] || "#9aa5b4" });
      el(rect, "title", {}, stage.stage_name + ": " + stage.status + ", " + stage.chunks_processed +
        " chunks, " + stage.processing_time_ms + " ms");
      el(svg, "text", { x: x + w + 4, y: y + 13 }, stage.processing_time_ms + " ms · " + stage.status);
      offset += stage.processing_time_ms;
    });
    el(svg, "text", { x: left, y: height - 6 }, "processing time, " + total + " ms in all");
  }

  // Throughput of each chunk (MiB/s) over the run's processing time, a line per stage.
  function throughput(run) {
    const svg = document.getElementById("throughput");
    clear(svg);
    const width = svg.clientWidth || 900, height = 220;
    const left = 50, right = 130, top = 24, bottom = 32;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const points = run.chunks.filter((c) => c.bytes_per_second !== null);
    if (points.length === 0) {
      el(svg, "text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no chunks yet");
      return;
    }
    const mib = (c) => c.bytes_per_second / 1048576;
    const maxT = Math.max(...points.map((c) => c.t_ms)) || 1;
    const maxY = Math.max(...points.map(mib)) * 1.1 || 1;
    const sx = (t) => left + (t / maxT) * (width - left - right);
    const sy = (v) => top + (1 - v / maxY) * (height - top - bottom);
    for (let i = 0; i <= 4; i++) {
      const v = (maxY * i) / 4;
      el(svg, "line", { x1: left, x2: width - right, y1: sy(v), y2: sy(v), class: "grid" });
      el(svg, "text", { x: left - 6, y: sy(v) + 4, "text-anchor": "end" }, v.toFixed(0));
    }
    el(svg, "line", { x1: left, x2: left, y1: top, y2: height - bottom, class: "axis" });
    el(svg, "line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "axis" });
    el(svg, "text", { x: left, y: height - 10 }, "0 ms");
    el(svg, "text", { x: width - right, y: height - 10, "text-anchor": "end" },
      maxT + " ms of processing time");
    el(svg, "text", { x: 6, y: 14 }, "MiB/s per chunk");
    const stages = [];
    points.forEach((c) => { if (!stages.includes(c.stage_name)) stages.push(c.stage_name); });
    stages.forEach(function (name, index) {
      const color = COLORS[index % COLORS.length];
      const line = points.filter((c) => c.stage_name === name)
        .map((c) => sx(c.t_ms).toFixed(1) + "," + sy(mib(c)).toFixed(1)).join(" ");
      el(svg, "polyline", { points: line, fill: "none", stroke: color, "stroke-width": 1.8 });
      points.filter((c) => c.stage_name === name).forEach(function (c) {
        const dot = el(svg, "circle", { cx: sx(c.t_ms), cy: sy(mib(c)), r: 2.5, fill: color });
        el(dot, "title", {}, name + " chunk " + c.chunk_sequence + ": " + mib(c).toFixed(1) +
          " MiB/s (" + c.processing_time_ms + " ms)");
      });
      el(svg, "rect", { x: width - right + 12, y: top + index * 18, width: 10, height: 10, fill: color });
      el(svg, "text", { x: width - right + 28, y: top + 9 + index * 18 }, name);
    });
  }

  function draw() {
    fetch(api, { credentials: "same-origin" })
      .then((response) => response.json())
      .then(function (run) {
        timeline(run);
        throughput(run);
        if (run.status === "running" || run.status === "paused") setTimeout(draw, 2000);
      });
  }
  draw();
})();
