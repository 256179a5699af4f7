// Log viewer: while the run is open, follow the live log (server-sent events of lines the
// server already escaped and coloured); when it ends, swap in the backing log.
"use strict";
(function () {
  const pre = document.getElementById("log");
  const status = document.getElementById("log-status");
  if (!pre || !pre.dataset.stream) return;
  let follow = true;
  pre.addEventListener("scroll", () => {
    follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
  });
  const source = new EventSource(pre.dataset.stream);
  source.addEventListener("lines", (event) => {
    // the server rendered these lines with every character of the log escaped
    pre.insertAdjacentHTML("beforeend", JSON.parse(event.data).join(""));
    if (follow) pre.scrollTop = pre.scrollHeight;
  });
  function showBacking(attempt) {
    fetch(pre.dataset.backing, { credentials: "same-origin" }).then((response) => {
      if (response.ok) return response.text();
      throw new Error(String(response.status));
    }).then((html) => {
      pre.innerHTML = html;  // escaped and coloured by the server
      pre.dataset.mode = "backing";
      if (status) { status.textContent = "complete"; status.classList.remove("live"); }
    }).catch(() => {
      if (attempt < 30) setTimeout(() => showBacking(attempt + 1), 1000);
      else if (status) status.textContent = "run finished; backing log not available";
    });
  }
  source.addEventListener("end", () => {
    source.close();
    if (status) status.textContent = "run finished, loading the full log";
    showBacking(0);
  });
  source.addEventListener("failed", (event) => {
    source.close();
    if (status) status.textContent = "live log unavailable: " + JSON.parse(event.data);
    showBacking(0);
  });
})();
