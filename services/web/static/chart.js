// A small live chart of a task queue's pending and claimed (running) counts.
"use strict";
(function () {
  const svg = document.getElementById("chart");
  if (!svg) return;
  const W = 600, H = 120, POINTS = 60;
  const history = [];
  const pendingLine = svg.querySelector("polyline.pending");
  const claimedLine = svg.querySelector("polyline.claimed");
  function draw() {
    const max = Math.max(1, ...history.map((p) => Math.max(p.pending || 0, p.claimed || 0)));
    const x = (i) => (W * i) / (POINTS - 1);
    const y = (v) => H - 6 - ((H - 20) * (v || 0)) / max;
    pendingLine.setAttribute("points", history.map((p, i) => x(i) + "," + y(p.pending)).join(" "));
    claimedLine.setAttribute("points", history.map((p, i) => x(i) + "," + y(p.claimed)).join(" "));
    document.getElementById("chart-max").textContent = "max " + max;
  }
  function tick() {
    fetch(svg.dataset.source, { credentials: "same-origin" }).then((r) => r.json()).then((counts) => {
      history.push(counts);
      if (history.length > POINTS) history.shift();
      document.getElementById("pending-now").textContent = counts.pending === null ? "–" : counts.pending;
      document.getElementById("claimed-now").textContent = counts.claimed === null ? "–" : counts.claimed;
      draw();
    }).catch(() => {});
  }
  tick();
  setInterval(tick, 5000);
})();
