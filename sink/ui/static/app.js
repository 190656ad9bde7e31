// studio-sink UI: JSON highlighting and backfill progress. No innerHTML with data: every
// piece of text from the server goes into the page through textContent.
"use strict";

(function () {
  var TOKEN = /("(?:[^"\\]|\\.)*")(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b|([{}\[\],])/g;

  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  // Replaces a <pre class="json">'s text by the same text, split into coloured spans.
  function highlight(pre) {
    var text = pre.textContent;
    var out = document.createDocumentFragment();
    var last = 0;
    var m;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(text)) !== null) {
      if (m.index > last) out.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[1] !== undefined) {
        out.appendChild(span(m[2] ? "j-key" : "j-str", m[1]));
        if (m[2]) out.appendChild(span("j-pun", m[2]));
      } else if (m[3] !== undefined) {
        out.appendChild(span("j-num", m[3]));
      } else if (m[4] !== undefined) {
        out.appendChild(span("j-lit", m[4]));
      } else {
        out.appendChild(span("j-pun", m[5]));
      }
      last = TOKEN.lastIndex;
    }
    if (last < text.length) out.appendChild(document.createTextNode(text.slice(last)));
    pre.textContent = "";
    pre.appendChild(out);
    pre.dataset.highlighted = "1";
  }

  function highlightWhenOpened(pre) {
    var details = pre.closest("details");
    if (!details || details.open) { highlight(pre); return; }
    details.addEventListener("toggle", function once() {
      if (details.open && !pre.dataset.highlighted) highlight(pre);
    });
  }

  function pollBackfill(box) {
    var url = box.dataset.pollUrl;
    var status = box.querySelector(".status");
    var bar = box.querySelector("progress");
    var counts = box.querySelector(".counts");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (b) {
          status.textContent = String(b.status);
          bar.max = Math.max(Number(b.items_total) || 0, 1);
          bar.value = Number(b.items_done) || 0;
          var text = (b.items_done || 0) + "/" + (b.items_total || 0) + " done";
          if (b.items_failed) text += ", " + b.items_failed + " failed";
          if (b.items_gone) text += ", " + b.items_gone + " gone at Twilio";
          counts.textContent = text;
          if (b.final) { window.location.reload(); } else { window.setTimeout(tick, 700); }
        })
        .catch(function () { window.setTimeout(tick, 3000); });
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre.json").forEach(highlightWhenOpened);
    var box = document.getElementById("backfill-progress");
    if (box && box.dataset.pollUrl) pollBackfill(box);
  });
})();

// The flow page: a click on a widget (or Enter on it) opens its panel, filled from
// widget.json with textContent and links built element by element.
(function () {
  function text(panel, cls, value) {
    panel.querySelector("." + cls).textContent = value === null || value === undefined ? "—" : String(value);
  }

  function seconds(value) {
    if (value === null || value === undefined) return "—";
    return value < 120 ? value.toFixed(1) + " s" : (value / 60).toFixed(1) + " min";
  }

  function fill(panel, b) {
    text(panel, "panel-name", b.widget);
    text(panel, "panel-type", b.widget_type || "");
    text(panel, "panel-entered", b.entered);
    text(panel, "panel-ended", b.ended_here);
    text(panel, "panel-drop", b.drop_off_share === null ? null : (b.drop_off_share * 100).toFixed(1) + " %");
    text(panel, "panel-median", seconds(b.median_seconds));
    text(panel, "panel-p90", seconds(b.p90_seconds));
    var list = panel.querySelector(".panel-executions");
    list.textContent = "";
    (b.executions || []).forEach(function (e) {
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.className = "sid";
      var account = new URLSearchParams(window.location.search).get("account");
      link.href = "/ui/executions/" + encodeURIComponent(e.execution_sid) +
        (account ? "?account=" + encodeURIComponent(account) : "");
      link.textContent = e.execution_sid;
      item.appendChild(link);
      var when = (e.date_created || "").replace("T", " ").slice(0, 19);
      var small = document.createElement("span");
      small.className = "small";
      small.textContent = " " + when + " · " + (e.status || "") + (e.ended_reason ? " " + e.ended_reason : "");
      item.appendChild(small);
      list.appendChild(item);
    });
    panel.querySelector(".panel-empty").hidden = (b.executions || []).length > 0;
    panel.hidden = false;
    panel.dataset.widget = b.widget;
  }

  function open(panel, node) {
    document.querySelectorAll("g.widget.selected").forEach(function (g) { g.classList.remove("selected"); });
    node.classList.add("selected");
    var url = panel.dataset.url + "&name=" + encodeURIComponent(node.dataset.widget);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (b) { fill(panel, b); })
      .catch(function () { text(panel, "panel-name", "could not load the widget's stats"); panel.hidden = false; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("widget-panel");
    var canvas = document.getElementById("canvas");
    if (!panel || !canvas) return;
    canvas.addEventListener("click", function (ev) {
      var node = ev.target.closest("g.widget");
      if (node) open(panel, node);
    });
    canvas.addEventListener("keydown", function (ev) {
      var node = ev.target.closest("g.widget");
      if (node && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); open(panel, node); }
    });
    var wanted = new URLSearchParams(window.location.search).get("widget");
    if (wanted) {
      canvas.querySelectorAll("g.widget").forEach(function (g) {
        if (g.dataset.widget === wanted) { open(panel, g); g.scrollIntoView({ block: "center", inline: "center" }); }
      });
    }
  });
})();

// The account selector (every page): choosing an account shows it at once.
(function () {
  var select = document.getElementById("account");
  if (!select || !select.form) { return; }
  select.addEventListener("change", function () { select.form.submit(); });
})();
