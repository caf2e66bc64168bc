// Outlier console: live alerts and incidents as they happen (server-sent
// events, resumed by the browser with Last-Event-ID after a reconnect).
// Pages work without it.
"use strict";
(function () {
  var base = document.body.getAttribute("data-live");
  if (!base || !window.EventSource) return;
  var box = document.getElementById("live");
  var shown = 0;
  function show(kind, d) {
    var a = document.createElement("a");
    a.href = d.href;
    a.className = "live-" + kind;
    a.textContent = "New " + kind + " (" + d.verdict + ") on " + d.host + ": " + d.what;
    box.insertBefore(a, box.firstChild);
    shown += 1;
    while (box.children.length > 5) box.removeChild(box.lastChild);
    document.title = "(" + shown + ") " + document.title.replace(/^\(\d+\) /, "");
  }
  var onIncidents = /\/incidents/.test(location.pathname);
  var url = onIncidents ? base + "/incidents" : base;
  var kind = onIncidents ? "incident" : "alert";
  var source = new EventSource(url);
  source.addEventListener(kind, function (m) {
    try { show(kind, JSON.parse(m.data)); } catch (e) { /* a malformed message is skipped */ }
  });
})();
