// Session time-out warning (WCAG 2.2.1): announce it before the idle time-out and let staff extend it.
(function () {
  var body = document.body;
  var idle = parseInt(body.getAttribute("data-idle-seconds") || "0", 10);
  var warn = parseInt(body.getAttribute("data-warning-seconds") || "0", 10);
  var box = document.getElementById("timeout-warning");
  if (!idle || !box) { return; }
  var warnTimer, endTimer;
  function arm() {
    clearTimeout(warnTimer); clearTimeout(endTimer);
    warnTimer = setTimeout(function () { box.hidden = false; document.getElementById("stay").focus(); },
                           Math.max(0, idle - warn) * 1000);
    endTimer = setTimeout(function () { window.location.assign("/?expired=1"); }, idle * 1000);
  }
  document.getElementById("stay").addEventListener("click", function () {
    fetch("/session/keepalive", { method: "POST", headers: { "X-CSRF-Token": body.getAttribute("data-csrf") },
                                  credentials: "same-origin" })
      .then(function (r) { if (r.ok) { box.hidden = true; arm(); } else { window.location.assign("/?expired=1"); } });
  });
  arm();
  var summary = document.querySelector(".error-summary");
  if (summary) { summary.focus(); }
}());

// The open timeline refreshes itself (no reload): the page asks for its news every few seconds while it is
// shown, for a quarter of an hour at most, without counting as activity (the session still times out).
(function () {
  var box = document.querySelector("[data-live-url]");
  var live = document.getElementById("live");
  if (!box || !live || !window.fetch || !window.DOMParser) { return; }
  var url = box.getAttribute("data-live-url");
  var every = Math.max(1, parseInt(box.getAttribute("data-refresh-seconds") || "5", 10)) * 1000;
  var news = document.getElementById("live-news");
  var changed = document.getElementById("live-changed");
  var available = live.getAttribute("data-available");
  var until = Date.now() + 15 * 60 * 1000;
  function schedule() { if (Date.now() < until) { setTimeout(tick, every); } }
  function tick() {
    if (document.visibilityState && document.visibilityState !== "visible") { schedule(); return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        var fresh = html && new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var current = document.getElementById("live");
        if (fresh && current && fresh.innerHTML !== current.innerHTML) {
          current.replaceWith(fresh);
          news.textContent = news.getAttribute("data-text") + " " + fresh.getAttribute("data-updated");
          if (fresh.getAttribute("data-available") !== available) { changed.hidden = false; }
        }
        schedule();
      })
      .catch(schedule);
  }
  schedule();
}());
