// pynenc monitor: live updates and selection helpers. Served as a file so
// that the content security policy needs no inline script.
(function () {
  "use strict";

  var liveState = function (text, title) {
    var el = document.getElementById("live-state");
    if (el) {
      el.textContent = text;
      el.title = title;
    }
  };

  var anySelected = function () {
    return document.querySelector("input[name=ids]:checked, input[name=all_matching]:checked") !== null;
  };

  // The server sends `change` when counts, queue, runners or actions moved;
  // live pages reload their main part through htmx, unless the user has
  // ticked invocations (a reload would lose the selection).
  if (window.EventSource && document.querySelector("[data-live]")) {
    var source = new EventSource("/events");
    source.addEventListener("ready", function () {
      liveState("●", "live: connected");
      document.body.setAttribute("data-live-state", "connected");
    });
    source.addEventListener("change", function () {
      if (anySelected()) {
        var stale = document.getElementById("stale");
        if (stale) {
          stale.classList.remove("hidden");
        }
        return;
      }
      if (window.htmx) {
        window.htmx.trigger(document.body, "pynenc:change");
      }
    });
    source.onerror = function () {
      liveState("○", "live: reconnecting");
      document.body.setAttribute("data-live-state", "reconnecting");
    };
  }

  // "select this page" ticks every box of the listing
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.id === "select-all") {
      var boxes = document.querySelectorAll("input[name=ids]");
      for (var i = 0; i < boxes.length; i++) {
        boxes[i].checked = t.checked;
      }
    }
  });

  document.addEventListener("htmx:afterSwap", function () {
    document.body.setAttribute("data-updated", String(Date.now()));
  });

  document.documentElement.setAttribute("data-monitor-js", "loaded");
})();
