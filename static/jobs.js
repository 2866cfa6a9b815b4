// Progressive enhancement for a batch job's page: while the job runs, its figures and progress
// bar follow /jobs/{id}/progress every second; when it ends the page reloads to show the
// downloads. Without JavaScript the page refreshes itself every few seconds instead.
(function () {
  "use strict";
  var box = document.querySelector("[data-job][data-open]");
  if (!box) { return; }
  var id = box.getAttribute("data-job");
  var bar = box.querySelector("progress");
  function set(name, value) {
    var el = box.querySelector("[data-field=" + name + "]");
    if (el) { el.textContent = value; }
  }
  function tick() {
    fetch("/jobs/" + id + "/progress", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) { setTimeout(tick, 3000); return; }
        bar.max = Math.max(p.total, 1);
        bar.value = p.done;
        bar.textContent = p.percent + "%";
        set("state", p.state);
        set("percent", p.percent);
        set("done", p.done_text);
        set("rate", p.rate);
        set("left", p.left);
        set("failed", p.failed_text);
        if (p.message) {
          var m = box.querySelector("[data-field=message]");
          m.textContent = p.message;
          m.hidden = false;
        }
        if (p.open) { setTimeout(tick, 1000); } else { window.location.reload(); }
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  setTimeout(tick, 1000);
})();
