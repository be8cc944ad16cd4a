// Keeps the link secret from the URL fragment in this tab only, removes it from the address bar,
// and hands it to the download forms. The fragment never reaches a server or a Referer.
(function () {
  "use strict";
  var id = document.body.getAttribute("data-message");
  if (!id) { return; }
  var key = "k:" + id;
  if (location.hash.length > 1) {
    sessionStorage.setItem(key, location.hash.slice(1));
    history.replaceState(null, "", location.pathname + location.search);
  }
  var secret = sessionStorage.getItem(key);
  var fields = document.querySelectorAll("input[name=k]");
  for (var i = 0; i < fields.length; i++) { if (secret) { fields[i].value = secret; } }
  var missing = document.getElementById("link-missing");
  if (missing && !secret && fields.length) { missing.hidden = false; }
  var nojs = document.getElementById("no-js");
  if (nojs) { nojs.hidden = true; }
  // Logging out forgets the secret too: on a shared computer the next person needs the e-mail.
  var forget = document.querySelectorAll("form[data-forget]");
  for (var j = 0; j < forget.length; j++) {
    forget[j].addEventListener("submit", function () { sessionStorage.removeItem(key); });
  }
})();
