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
