/* presenced widget: live presence of every element with data-im-id on the page.
 *
 * <span data-im-id="10086"></span>
 * <script async src="https://NODE/widget.js"></script>
 *
 * One EventSource per page (GET /v1/watch?ids=...) on the node that served this script;
 * without EventSource, one batch GET /v1/presence?ids=... (no polling). Elements added later:
 * window.presenced.scan(). The node fills in CONFIG below (chat_url, unknown, batch_limit).
 * No dependencies, no globals but window.presenced.
 */
(function () {
  "use strict";
  var CONFIG = /*CONFIG*/{};
  if (window.presenced && window.presenced.scan) {
    // Included twice: keep the one stream.
    window.presenced.scan();
    return;
  }
  var script = document.currentScript;
  var base = location.origin;
  try {
    if (script && script.src) base = new URL(script.src, location.href).origin;
  } catch (e) { /* keep the page's origin */ }
  var limit = CONFIG.batch_limit || 1000;
  var bound = {};      // id -> [element]
  var ids = [];        // ids in the stream, in first-seen order
  var last = {};       // id -> last status object
  var source = null;   // the EventSource
  var streamIds = "";  // the ids the open stream watches
  var failures = 0;    // consecutive errors without a status in between
  var timer = null;
  var pending = null;

  function isOnline(st) { return !!(st && st.online); }

  function word(st) {
    if (!st) return "\u2026";
    if (st.online) return "online";
    if (!st.known && CONFIG.unknown === "show") return "unknown";
    return "offline";
  }

  function render(el, id) {
    var st = last[id];
    var w = word(st);
    var text = w;
    if (isOnline(st) && st.clients && st.clients.length) text += " (" + st.clients.join(", ") + ")";
    var inner = document.createElement("span");
    inner.className = "presenced-status presenced-" + (st ? w : "pending");
    inner.textContent = text;
    var node = inner;
    if (CONFIG.chat_url) {
      var a = document.createElement("a");
      a.className = "presenced-link";
      a.href = CONFIG.chat_url.replace("{id}", encodeURIComponent(id));
      a.appendChild(inner);
      node = a;
    }
    el.setAttribute("data-presenced", st ? w : "pending");
    el.title = id + ": " + text;
    while (el.firstChild) el.removeChild(el.firstChild);
    el.appendChild(node);
  }

  function apply(st) {
    if (!st || !st.id) return;
    last[st.id] = st;
    var els = bound[st.id] || [];
    for (var i = 0; i < els.length; i++) render(els[i], st.id);
  }

  function open() {
    timer = null;
    if (!ids.length) return;
    var list = ids.slice(0, limit).join(",");
    if (source && streamIds === list && source.readyState !== 2) return;
    if (source) source.close();
    streamIds = list;
    source = new EventSource(base + "/v1/watch?ids=" + list);
    source.addEventListener("status", function (ev) {
      failures = 0;
      try { apply(JSON.parse(ev.data)); } catch (e) { /* ignore a bad frame */ }
    });
    source.addEventListener("reset", function () {
      // Fresh statuses of every id follow; nothing to drop meanwhile.
      failures = 0;
    });
    source.addEventListener("error", function () {
      failures++;
      // EventSource retries by itself (retry: 2000) while CONNECTING; once it gives up
      // (CLOSED) or keeps failing, reopen with a capped backoff.
      if (source.readyState === 2 || failures >= 5) {
        source.close();
        schedule(Math.min(60000, 1000 * Math.pow(2, Math.min(failures, 6))));
      }
    });
  }

  function schedule(ms) {
    if (timer) clearTimeout(timer);
    timer = setTimeout(open, ms);
  }

  function query(newIds) {
    // One batch query for ids not asked before; never repeated.
    var list = newIds.slice(0, limit);
    if (!list.length) return;
    var xhr = new XMLHttpRequest();
    xhr.open("GET", base + "/v1/presence?ids=" + list.join(","));
    xhr.onload = function () {
      if (xhr.status !== 200) return;
      try {
        var body = JSON.parse(xhr.responseText);
        for (var i = 0; i < body.statuses.length; i++) {
          var st = body.statuses[i];
          // The JSON API shows statuses as they are: apply the public rule here.
          if (CONFIG.unknown !== "show" && !st.online) st = { id: st.id, known: false, online: false, clients: [] };
          apply(st);
        }
      } catch (e) { /* leave them pending */ }
    };
    xhr.send();
  }

  function scan(root) {
    var found = (root || document).querySelectorAll("[data-im-id]");
    var fresh = [];
    for (var i = 0; i < found.length; i++) {
      var el = found[i];
      if (el.__presenced) continue;
      var id = String(el.getAttribute("data-im-id")).trim();
      if (!/^[0-9]{1,20}$/.test(id)) continue;
      id = id.replace(/^0+(?=[0-9])/, "");
      el.__presenced = true;
      if (!bound[id]) {
        bound[id] = [];
        ids.push(id);
        fresh.push(id);
      }
      bound[id].push(el);
      render(el, id);
    }
    if (!fresh.length) return;
    if (ids.length > limit && window.console) console.warn("presenced: only the first " + limit + " ids are watched");
    if (window.EventSource) {
      // Elements found in one go share one (re)connection.
      schedule(0);
    } else {
      if (pending) pending = pending.concat(fresh);
      else {
        pending = fresh;
        setTimeout(function () { var p = pending; pending = null; query(p); }, 0);
      }
    }
  }

  window.presenced = { scan: scan, base: base };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { scan(); });
  } else {
    scan();
  }
})();
