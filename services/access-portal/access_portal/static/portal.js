// Keeps the link secret from the URL fragment in this tab only, removes it from the address bar,
// and hands it to the forms that open the document. The fragment never reaches a server or a Referer.
(function () {
  "use strict";
  var id = document.body.getAttribute("data-message");
  var i;
  // GOV.UK error pattern: the summary takes the focus, so screen readers announce it first.
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
  if (!id) { return; }
  var key = "k:" + id;
  // The fragment is the secret, 32 bytes in unpadded base64url (43 characters, the last one carrying
  // 2 bits), then 4 check characters: the CRC-24 (OpenPGP) of the secret's text in base64url, as
  // shared/crypto.py link_check makes them. Any one changed character and any two swapped neighbours
  // change it. Links e-mailed before the check carry the secret alone. Checked here, in the browser:
  // a damaged link is told on the first page, and nothing of the secret is sent anywhere to find out.
  var B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  function linkCheck(secret) {
    var crc = 0xB704CE, j, n;
    for (n = 0; n < secret.length; n++) {
      crc ^= secret.charCodeAt(n) << 16;
      for (j = 0; j < 8; j++) {
        crc <<= 1;
        if (crc & 0x1000000) { crc ^= 0x1864CFB; }
      }
    }
    return B64URL[(crc >> 18) & 63] + B64URL[(crc >> 12) & 63] + B64URL[(crc >> 6) & 63] + B64URL[crc & 63];
  }
  function secretOf(fragment) {
    if (!/^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]([A-Za-z0-9_-]{4})?$/.test(fragment)) { return null; }
    var secret = fragment.slice(0, 43);
    return fragment.length === 43 || linkCheck(secret) === fragment.slice(43) ? secret : null;
  }
  if (location.hash.length > 1) {
    var fromLink = secretOf(location.hash.slice(1));
    if (fromLink) { sessionStorage.setItem(key, fromLink); } else { sessionStorage.removeItem(key); }
    history.replaceState(null, "", location.pathname + location.search);
  }
  var secret = sessionStorage.getItem(key);
  var whole = !!secret && !!secretOf(secret);
  var check = document.querySelector("[data-link-check]");
  if (check && !whole) {
    check.hidden = false;
    var form = document.getElementById("number-form");
    if (form) { form.hidden = true; }
    check.focus();
  }
  var fields = document.querySelectorAll("input[name=k]");
  for (i = 0; i < fields.length; i++) { if (secret) { fields[i].value = secret; } }
  var missing = document.getElementById("link-missing");
  if (missing && !secret && fields.length) { missing.hidden = false; }
  var nojs = document.getElementById("no-js");
  if (nojs) { nojs.hidden = true; }
  // What the patient typed stays in this tab while they switch the language or come back to the page.
  var typedKey = function (input) { return "typed:" + id + ":" + input.id; };
  var inputs = document.querySelectorAll("input[type=tel], input[type=text]");
  for (i = 0; i < inputs.length; i++) {
    if (!inputs[i].value && sessionStorage.getItem(typedKey(inputs[i]))) {
      inputs[i].value = sessionStorage.getItem(typedKey(inputs[i]));
    }
    inputs[i].addEventListener("input", function (e) {
      sessionStorage.setItem(typedKey(e.target), e.target.value);
    });
  }
  var appointment = document.getElementById("appointment");
  if (document.getElementById("code")) { sessionStorage.removeItem("typed:" + id + ":phone"); }
  if (appointment) { sessionStorage.removeItem("typed:" + id + ":code"); }
  // The session's end, as the server keeps it: warned before, then the appointment leaves the screen and
  // the page is asked again (the server answers that the session has ended). Every request that touches
  // the session (the appointment, a download) starts the count again.
  var warning = document.getElementById("session-warning");
  var timers = [];
  function ended() {
    var gone = [appointment, document.getElementById("after-code"), warning];
    for (var j = 0; j < gone.length; j++) { if (gone[j]) { gone[j].remove(); } }
    location.replace(location.pathname);
  }
  function restartTimers() {
    if (!warning) { return; }
    while (timers.length) { clearTimeout(timers.pop()); }
    // WCAG 2.2.1: warn before the idle session ends, with a button that extends it.
    timers.push(setTimeout(function () { warning.hidden = false; warning.focus(); },
                           1000 * parseInt(warning.getAttribute("data-warn-after"), 10)));
    // A little after the server's own limit, so that the session has really ended when the page asks.
    timers.push(setTimeout(ended, 1000 * (parseInt(warning.getAttribute("data-idle-after"), 10) + 2)));
  }
  restartTimers();
  // The appointment as text, opened with the secret (like a download), fetched so the page stays a GET.
  var csrf = document.querySelector("input[name=csrf]");
  if (appointment && secret && csrf) {
    var body = new FormData();
    body.append("csrf", csrf.value);
    body.append("k", secret);
    fetch(appointment.getAttribute("data-from"), { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, data: data }; }); })
      .then(function (answer) {
        if (!answer.ok) {
          if (answer.data.state === "link_incomplete" && missing) { missing.hidden = false; }
          else { location.replace(location.pathname); }  // the page says what happened (session ended...)
          return;
        }
        var shown = appointment.querySelectorAll("[data-field]");
        for (var j = 0; j < shown.length; j++) {
          shown[j].textContent = answer.data[shown[j].getAttribute("data-field")] || "";
        }
        if (!answer.data.instructions) {
          appointment.querySelector("[data-field=instructions]").remove();
          appointment.querySelector("[data-field-label=instructions]").remove();
        }
        appointment.hidden = false;
        restartTimers();
      });
  }
  var print = document.getElementById("print");
  if (print) {
    print.hidden = false;
    print.addEventListener("click", function () { window.print(); });
  }
  var done = document.getElementById("download-done");
  var downloads = document.querySelectorAll("form[data-download]");
  for (i = 0; i < downloads.length; i++) {
    downloads[i].addEventListener("submit", function () {
      if (done) { done.textContent = done.getAttribute("data-text"); }
      restartTimers();
    });
  }
  // The code page: the time left counts down from the code's expiry (the seconds the server counted from
  // it). A screen reader hears it at 5, 2 and 1 minutes left and when the code is over, not every second.
  var left = document.getElementById("code-left");
  var ends = 0;
  if (left) {
    var time = document.getElementById("code-time");
    var said = document.getElementById("code-time-said");
    var over = document.getElementById("code-over");
    ends = Date.now() + 1000 * parseInt(time.getAttribute("data-seconds-left"), 10);
    var milestones = [300, 120, 60];
    var tick = function () {
      var s = Math.max(0, Math.round((ends - Date.now()) / 1000));
      left.textContent = Math.floor(s / 60) + ":" + ("0" + (s % 60)).slice(-2);
      while (milestones.length && s < milestones[0] - 5) { milestones.shift(); }  // passed before we looked
      if (milestones.length && s <= milestones[0]) { said.textContent = time.textContent; milestones.shift(); }
      if (s === 0) {
        time.hidden = true;
        over.hidden = false;
        said.textContent = over.textContent;
        return;
      }
      setTimeout(tick, 1000);
    };
    tick();
  }
  // The code page learns that its SMS could not be delivered without a reload: it asks every few seconds
  // (GET …/code/status) while the code lasts, and then shows what to do.
  var smsFailed = document.getElementById("sms-failed-now");
  if (smsFailed && window.fetch) {
    var poll = function () {
      fetch("/m/" + id + "/code/status", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : {}; })
        .then(function (status) {
          if (status.sms === "failed") {
            smsFailed.hidden = false;
            smsFailed.focus();
          } else if (Date.now() < ends) {
            setTimeout(poll, 3000);
          }
        }, function () { if (Date.now() < ends) { setTimeout(poll, 10000); } });
    };
    setTimeout(poll, 3000);
  }
  // Logging out forgets the secret and what was typed: on a shared computer the next person needs the e-mail.
  var forget = document.querySelectorAll("form[data-forget]");
  for (i = 0; i < forget.length; i++) {
    forget[i].addEventListener("submit", function () {
      sessionStorage.removeItem(key);
      sessionStorage.removeItem("typed:" + id + ":phone");
      sessionStorage.removeItem("typed:" + id + ":code");
    });
  }
})();
