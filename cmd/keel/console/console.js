// Keel's console: reads the admin API (/api/) and draws it. No framework,
// no build step.
//
// Safety rule: strings from the API (client ids, usernames, topics,
// filters, errors) become text nodes (el() turns every string child into
// document.createTextNode) or go through encodeURIComponent into a link.
// Nothing here assigns innerHTML, outerHTML or insertAdjacentHTML, and the
// page's Content-Security-Policy lets no inline script run.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const SESSION_LIMIT = 1000; // rows fetched for the sessions table
  const RETAINED_LIMIT = 1000;

  // el makes an element: attrs are set with setAttribute (or as a class),
  // children are elements or strings (text nodes), nulls skipped.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  // fill replaces node's children with kids (as el() takes them).
  function fill(node, ...kids) {
    node.replaceChildren(...kids.flat(Infinity).filter(k => k !== null && k !== undefined)
      .map(k => typeof k === "string" || typeof k === "number" ? document.createTextNode(String(k)) : k));
  }

  function num(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "—";
  }

  function bytes(n) {
    if (typeof n !== "number") return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
  }

  function duration(s) {
    if (typeof s !== "number") return "—";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d > 0) return d + "d " + h + "h " + m + "m";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + (s % 60) + "s";
    return (s % 60) + "s";
  }

  function millis(s) {
    if (typeof s !== "number") return "—";
    if (s < 0) return "> last bucket";
    const ms = s * 1000;
    return (ms < 1 ? ms.toFixed(3) : ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) + " ms";
  }

  function when(t) {
    if (!t) return "—";
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function sessionHref(id) {
    return "#/session/" + encodeURIComponent(id);
  }

  function owner(s) {
    if (s.owner_anonymous) return "(anonymous)";
    if (typeof s.owner === "string") return s.owner;
    return "—";
  }

  class HTTPError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const resp = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON: say the status */ }
    if (!resp.ok) {
      throw new HTTPError(resp.status, (body && body.error) || ("HTTP " + resp.status));
    }
    return body;
  }

  // act asks for an action (POST /api/clients/{id}/disconnect, DELETE
  // /api/sessions/{id}) after the operator confirms it; same origin, so
  // the admin listener's Origin check lets it through.
  async function act(method, path, question) {
    if (!window.confirm(question)) return null;
    const resp = await fetch(path, { method, headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON: say the status */ }
    if (!resp.ok) throw new HTTPError(resp.status, (body && body.error) || ("HTTP " + resp.status));
    return body;
  }

  function card(label, value, sub, field) {
    return el("div", { class: "card" },
      el("div", { class: "label" }, label),
      el("div", { class: "value", "data-field": field }, value),
      sub ? el("div", { class: "sub" }, sub) : null);
  }

  // table builds a table: cols are {title, cls, sort}; rows are arrays of
  // cells, each a string, an element, or {v, cls, col}.
  function table(cls, cols, rows, onSort, sorted) {
    const head = el("tr", null, cols.map(c => {
      const title = c.sort && onSort
        ? el("button", { type: "button", class: c.sort === sorted ? "sorted" : null, "data-sort": c.sort }, c.title)
        : c.title;
      return el("th", { class: c.cls || null, scope: "col" }, title);
    }));
    if (onSort) {
      head.addEventListener("click", ev => {
        const b = ev.target.closest("button[data-sort]");
        if (b) onSort(b.getAttribute("data-sort"));
      });
    }
    const body = el("tbody", null, rows.map(r => el("tr", null, r.map((c, i) => {
      const col = cols[i];
      if (c !== null && typeof c === "object" && !(c instanceof Node)) {
        return el("td", { class: [col.cls, c.cls].filter(Boolean).join(" ") || null, "data-col": col.key }, c.v);
      }
      return el("td", { class: col.cls || null, "data-col": col.key }, c);
    }))));
    return el("div", { class: "scroll" }, el("table", { class: cls }, el("thead", null, head), body));
  }

  function reasons(title, counts, field) {
    const rows = Object.keys(counts || {}).sort().map(k => [k, { v: num(counts[k]), cls: counts[k] > 0 ? "bad" : null }]);
    return el("div", null, el("h2", null, title),
      table(field, [{ title: "reason", key: "reason" }, { title: "count", cls: "num", key: "count" }], rows));
  }

  // --- routes -------------------------------------------------------

  function parseHash() {
    const h = location.hash.replace(/^#/, "") || "/";
    const q = h.indexOf("?");
    const path = q < 0 ? h : h.slice(0, q);
    const params = new URLSearchParams(q < 0 ? "" : h.slice(q + 1));
    if (path.startsWith("/session/")) {
      let id;
      try { id = decodeURIComponent(path.slice("/session/".length)); } catch (e) { id = path.slice("/session/".length); }
      return { name: "session", id, params };
    }
    const name = { "/": "overview", "/sessions": "sessions", "/retained": "retained", "/listeners": "listeners" }[path];
    return { name: name || "notfound", params };
  }

  function setParams(base, params) {
    const s = params.toString();
    history.replaceState(null, "", "#" + base + (s ? "?" + s : ""));
  }

  // Each view is {mount(root, route) -> refresh function}; refresh fetches
  // and redraws the part of the view that changes, so an input the user is
  // typing in is not replaced under them.
  const views = {};

  let last = null; // the previous stats, for rates

  // bridgeCards is one card per bridge (GET /api/bridges): its state, its
  // queue on disk, its counters, and why it is down; nothing without bridges.
  function bridgeCards(v) {
    const bs = (v && v.bridges) || [];
    if (!bs.length) return null;
    return el("div", { "data-field": "bridges" },
      el("h2", null, "Bridges"),
      el("div", { class: "cards" }, bs.map(b => {
        const q = typeof b.queued_messages === "number" ? num(b.queued_messages) + " queued (" + bytes(b.queued_bytes) + ")" : "no queue yet";
        const sub = q + ", " + num(b.forwarded) + " forwarded, " + num(b.received) + " received, " + num(b.dropped) + " dropped" +
          (b.last_error ? "; last error: " + b.last_error : "");
        const c = card("bridge " + b.name, b.state, sub, "bridge-" + b.name);
        c.querySelector(".value").classList.add(b.connected ? "ok" : "bad");
        return c;
      })));
  }

  views.overview = function (root) {
    const body = el("div");
    root.append(body);
    return async function () {
      const [st, q, br] = await Promise.all([api("/api/stats"), api("/api/queues?limit=10"), api("/api/bridges")]);
      const b = st.broker || {};
      const s = st.stats || {};
      const now = performance.now();
      let rates = null;
      if (last && b.uptime_seconds > last.b.uptime_seconds) {
        const dt = (now - last.at) / 1000;
        const per = f => ((b[f] || 0) - (last.b[f] || 0)) / dt;
        const fc = (b.fsync.count || 0) - (last.b.fsync.count || 0);
        rates = {
          in: per("messages_received"), out: per("messages_sent"), syncs: per("store_syncs"),
          fsync: fc > 0 ? ((b.fsync.sum_seconds - last.b.fsync.sum_seconds) / fc) : null,
        };
      }
      last = { b, at: now };
      const rate = v => rates ? v.toFixed(1) + "/s" : "…";
      const store = s.store || {};
      const f = b.fsync || {};
      const failed = b.store_failed
        ? el("p", { class: "bad", "data-field": "store_failed" }, "The store failed: " + b.store_failed + ". Keel acknowledges nothing more.")
        : null;
      const low = b.disk_low
        ? el("p", { class: "bad", "data-field": "disk_low" }, "The disk is below min_free_disk (" + bytes(b.disk_free_bytes) + " free, the mark is " +
          bytes(b.disk_min_free_bytes) + "): new QoS 1/2 publishes and new persistent sessions are refused until a drain or an operator frees space.")
        : null;
      const used = b.disk_total_bytes ? b.disk_total_bytes - b.disk_free_bytes : null;
      const diskSub = b.disk_total_bytes
        ? bytes(used) + " used of " + bytes(b.disk_total_bytes) + " (" + (100 * used / b.disk_total_bytes).toFixed(1) + "%); " +
          (b.disk_min_free_bytes ? "refusing below " + bytes(b.disk_min_free_bytes) + " free" : "min_free_disk off")
        : "not measured";
      const queues = table("queues", [
        { title: "client id", cls: "id", key: "client_id" },
        { title: "connected", key: "connected" },
        { title: "entries", cls: "num", key: "entries" },
        { title: "queued", cls: "num", key: "queued" },
        { title: "in flight", cls: "num", key: "inflight" },
        { title: "bytes", cls: "num", key: "bytes" },
      ], (q.queues || []).map(r => [
        el("a", { href: sessionHref(r.client_id) }, r.client_id),
        r.connected ? "yes" : "offline since " + when(r.disconnected_at),
        num(r.queue.entries), num(r.queue.queued), num(r.queue.inflight), bytes(r.queue.bytes),
      ]));
      fill(body,
        failed,
        low,
        el("h2", null, "Broker"),
        el("div", { class: "cards" },
          card("uptime", duration(b.uptime_seconds), b.version, "uptime"),
          card("clients connected", num(b.clients_connected), null, "clients_connected"),
          card("persistent sessions", num(b.sessions_persistent), num(b.sessions_offline) + " offline", "sessions_persistent"),
          card("queued messages", num(b.queued_messages), bytes(b.queued_bytes), "queued_messages"),
          card("in flight", num(s.inflight), num(s.queued) + " waiting to be sent", "inflight"),
          card("retained", num(b.retained), bytes(s.retained_bytes) + " of payload", "retained"),
          card("disk free", b.disk_total_bytes ? bytes(b.disk_free_bytes) : "—", diskSub, "disk_free"),
          card("store on disk", bytes(b.store_bytes), "WAL " + bytes(store.wal_bytes) + ", read amp " + num(store.read_amp), "store_bytes"),
          card("fsync", rates && rates.fsync !== null ? millis(rates.fsync) : f.count ? millis(f.sum_seconds / f.count) : "—",
            (rates && rates.fsync !== null ? "mean since the last refresh" : "mean since start") +
            "; p50 ≤ " + millis(f.p50_le_seconds) + ", p99 ≤ " + millis(f.p99_le_seconds), "fsync"),
          card("messages in", rate(rates ? rates.in : 0), num(b.messages_received) + " since start", "messages_in"),
          card("messages out", rate(rates ? rates.out : 0), num(b.messages_sent) + " since start", "messages_out"),
          card("syncs", rate(rates ? rates.syncs : 0),
            b.store_syncs ? (b.store_txns / b.store_syncs).toFixed(2) + " batches per sync" : "none yet", "syncs"),
          card("dedup hits", num(b.dedup_hits), num(b.dedup_ids) + " ids in the window", "dedup_hits"),
          card("commit failures", num(b.commit_failures), null, "commit_failures")),
        el("div", { class: "cards" }, reasons("Refused, by reason", b.refused, "refused"), reasons("Dropped, by reason", b.dropped, "dropped")),
        bridgeCards(br),
        el("h2", null, "Largest queues"),
        (q.queues || []).length ? queues : el("p", { class: "empty" }, "No session has anything queued."));
    };
  };

  const sessionSorts = {
    client_id: (a, b) => a.client_id < b.client_id ? -1 : a.client_id > b.client_id ? 1 : 0,
    queue: (a, b) => b.queue.entries - a.queue.entries || sessionSorts.client_id(a, b),
    bytes: (a, b) => b.queue.bytes - a.queue.bytes || sessionSorts.client_id(a, b),
    inflight: (a, b) => b.queue.inflight - a.queue.inflight || sessionSorts.client_id(a, b),
  };

  views.sessions = function (root, route) {
    const params = route.params;
    let sort = sessionSorts[params.get("sort")] ? params.get("sort") : "client_id";
    const input = el("input", { type: "search", placeholder: "client id prefix", "aria-label": "client id prefix", id: "prefix" });
    input.value = params.get("prefix") || "";
    const note = el("span", { class: "note" });
    const body = el("div");
    root.append(el("h2", null, "Sessions"), el("div", { class: "controls" }, input, note), body);
    let rows = [];
    const draw = () => {
      const sorted = rows.slice().sort(sessionSorts[sort]);
      fill(body, sorted.length ? table("sessions", [
        { title: "client id", cls: "id", sort: "client_id", key: "client_id" },
        { title: "owner", key: "owner" },
        { title: "protocol", key: "protocol" },
        { title: "connected", key: "connected" },
        { title: "queue", cls: "num", sort: "queue", key: "queue" },
        { title: "bytes", cls: "num", sort: "bytes", key: "bytes" },
        { title: "in flight", cls: "num", sort: "inflight", key: "inflight" },
        { title: "subscriptions", key: "subscriptions" },
      ], sorted.map(s => [
        el("a", { href: sessionHref(s.client_id) }, s.client_id),
        owner(s),
        s.protocol,
        s.connected ? "yes" : "offline since " + when(s.disconnected_at),
        num(s.queue.entries),
        bytes(s.queue.bytes),
        num(s.queue.inflight),
        s.subscriptions.map(x => x.filter + " (QoS " + x.qos + ")").join(", ") || "—",
      ]), k => { sort = k; params.set("sort", k); setParams("/sessions", params); draw(); }, sort)
        : el("p", { class: "empty" }, input.value ? "No session's client id starts with that." : "No stored sessions."));
    };
    const refresh = async function () {
      const prefix = input.value;
      const v = await api("/api/sessions?limit=" + SESSION_LIMIT + "&prefix=" + encodeURIComponent(prefix));
      if (prefix !== input.value) return; // typed meanwhile: the next refresh has it
      rows = v.sessions || [];
      note.textContent = v.next
        ? "More than " + SESSION_LIMIT + " match: showing the first " + SESSION_LIMIT + " by client id, sorted among themselves. Narrow the prefix."
        : rows.length + (rows.length === 1 ? " session" : " sessions");
      draw();
    };
    let timer = 0;
    input.addEventListener("input", () => {
      if (input.value) params.set("prefix", input.value); else params.delete("prefix");
      setParams("/sessions", params);
      clearTimeout(timer);
      timer = setTimeout(() => run(refresh), 250);
    });
    return refresh;
  };

  function yesno(b) { return b ? "yes" : "no"; }

  views.session = function (root, route) {
    const body = el("div");
    root.append(body);
    let refreshSession = () => {};
    return refreshSession = async function () {
      let v;
      try {
        v = await api("/api/sessions/" + encodeURIComponent(route.id));
      } catch (e) {
        if (e instanceof HTTPError && e.status === 404) {
          fill(body, el("h2", { class: "session-id" }, route.id),
            el("p", { class: "empty" }, "No such session (it may have expired or ended)."));
          return;
        }
        throw e;
      }
      const s = v.session;
      const outcome = el("span", { class: "note", "data-field": "action_result" });
      const enc = encodeURIComponent(s.client_id);
      const button = (action, label, method, path, question, done) => {
        const b = el("button", { type: "button", class: "action", "data-action": action }, label);
        b.addEventListener("click", async () => {
          try {
            const r = await act(method, path, question);
            if (r) { outcome.textContent = done; setTimeout(() => run(refreshSession), 300); }
          } catch (e) {
            outcome.textContent = label + " failed: " + e.message;
            outcome.className = "note bad";
          }
        });
        return b;
      };
      const actions = el("div", { class: "actions" },
        s.connected ? button("disconnect", "Disconnect client", "POST", "/api/clients/" + enc + "/disconnect",
          "Disconnect " + s.client_id + "? Its session stays; a 5.0 client is told 0x98 Administrative action.", "Disconnected.") : null,
        button("delete", "Delete session", "DELETE", "/api/sessions/" + enc,
          "Delete the session of " + s.client_id + ", its subscriptions and its queue of " + s.queue.entries + "? This cannot be undone.", "Deleted."),
        outcome);
      const kv = pairs => el("dl", { class: "kv" }, pairs.map(([k, val, field]) => [el("dt", null, k), el("dd", { "data-field": field }, val)]));
      fill(body,
        el("h2", { class: "session-id" }, s.client_id),
        actions,
        kv([
          ["owner", owner(s), "owner"],
          ["protocol", s.protocol, "protocol"],
          ["expiry", s.never_expires ? "never" : duration(s.expiry_seconds) + " after disconnect", "expiry"],
          ["connected", s.connected ? "yes" : "no, since " + when(s.disconnected_at), "connected"],
          ["expires at", s.expires_at ? when(s.expires_at) : "—", "expires_at"],
          ["queue entries", num(s.queue.entries), "queue_entries"],
          ["waiting to be sent", num(s.queue.queued), "queue_queued"],
          ["in flight", num(s.queue.inflight), "queue_inflight"],
          ["queue bytes", bytes(s.queue.bytes), "queue_bytes"],
          ["oldest queue position", s.queue.oldest_seq ? String(s.queue.oldest_seq) : "—", "oldest_seq"],
          ["inbound QoS 2 ids", s.inbound_qos2.length ? s.inbound_qos2.join(", ") : "—", "inbound_qos2"],
        ]),
        el("h2", null, "Subscriptions"),
        s.subscriptions.length ? table("subscriptions", [
          { title: "filter", cls: "id", key: "filter" }, { title: "QoS", key: "qos" }, { title: "no local", key: "no_local" },
          { title: "retain as published", key: "rap" }, { title: "retain handling", key: "rh" }, { title: "subscription id", key: "subid" },
        ], s.subscriptions.map(x => [x.filter, String(x.qos), yesno(x.no_local), yesno(x.retain_as_published),
          String(x.retain_handling), x.subscription_id ? String(x.subscription_id) : "—"]))
          : el("p", { class: "empty" }, "None."),
        el("h2", null, "In flight"),
        s.inflight.length ? table("inflight", [
          { title: "packet id", cls: "num", key: "packet_id" }, { title: "state", key: "state" }, { title: "QoS", key: "qos" },
          { title: "topic", cls: "id", key: "topic" }, { title: "queue position", cls: "num", key: "seq" },
        ], s.inflight.map(x => [String(x.packet_id), x.state, String(x.qos), x.topic || "—", String(x.seq)]))
          : el("p", { class: "empty" }, "None."),
        el("h2", null, "Will"),
        s.will ? kv([
          ["topic", s.will.topic, "will_topic"], ["QoS", String(s.will.qos), "will_qos"], ["retain", yesno(s.will.retain), "will_retain"],
          ["payload", bytes(s.will.payload_bytes), "will_payload"], ["delay", duration(s.will.delay_seconds), "will_delay"],
        ]) : el("p", { class: "empty" }, "None."));
    };
  };

  views.retained = function (root, route) {
    const params = route.params;
    const input = el("input", { type: "search", placeholder: "topic prefix", "aria-label": "topic prefix", id: "prefix" });
    input.value = params.get("prefix") || "";
    const note = el("span", { class: "note" });
    const body = el("div");
    root.append(el("h2", null, "Retained messages"), el("div", { class: "controls" }, input, note), body);
    const refresh = async function () {
      const prefix = input.value;
      const v = await api("/api/retained?limit=" + RETAINED_LIMIT + "&prefix=" + encodeURIComponent(prefix));
      if (prefix !== input.value) return;
      const rows = v.retained || [];
      note.textContent = v.next ? "More than " + RETAINED_LIMIT + " match: showing the first " + RETAINED_LIMIT + " by topic." : rows.length + " retained";
      fill(body, rows.length ? table("retained", [
        { title: "topic", cls: "id", key: "topic" }, { title: "QoS", key: "qos" },
        { title: "payload", cls: "num", key: "payload" }, { title: "stored", cls: "num", key: "stored" },
        { title: "expires", key: "expires" },
      ], rows.map(r => [r.topic, String(r.qos), bytes(r.payload_bytes), bytes(r.stored_bytes),
        r.expires_at ? (r.expired ? "expired " : "") + when(r.expires_at) : "never"]))
        : el("p", { class: "empty" }, "No retained messages" + (prefix ? " under that prefix." : ".")));
    };
    let timer = 0;
    input.addEventListener("input", () => {
      if (input.value) params.set("prefix", input.value); else params.delete("prefix");
      setParams("/retained", params);
      clearTimeout(timer);
      timer = setTimeout(() => run(refresh), 250);
    });
    return refresh;
  };

  views.listeners = function (root) {
    const body = el("div");
    root.append(el("h2", null, "Listeners"), body);
    return async function () {
      const v = await api("/api/listeners");
      const rows = v.listeners || [];
      const refused = r => Object.keys(r.refused || {}).filter(k => r.refused[k] > 0).map(k => k + " " + num(r.refused[k])).join(", ") || "none";
      fill(body, rows.length ? table("listeners", [
        { title: "name", key: "name" }, { title: "address", key: "addr" }, { title: "transport", key: "transport" },
        { title: "open", cls: "num", key: "open" }, { title: "accepted", cls: "num", key: "accepted" },
        { title: "refused", key: "refused" }, { title: "TLS handshake failures", cls: "num", key: "tls" },
      ], rows.map(r => [r.name, r.addr,
        r.transport + (r.websocket_path ? " " + r.websocket_path : "") + (r.proxy_protocol ? " + PROXY" : ""),
        num(r.open) + (r.max_connections ? " / " + num(r.max_connections) : ""), num(r.accepted), refused(r),
        num(r.tls_handshake_failures)]))
        : el("p", { class: "empty" }, "No MQTT listeners are known to the admin listener."));
    };
  };

  views.notfound = function (root) {
    root.append(el("p", { class: "empty" }, "No such page."), el("a", { href: "#/" }, "Overview"));
    return async function () {};
  };

  // --- the loop -----------------------------------------------------
  //
  // One refresh at a time. The API reads the store's snapshot on each
  // call, which costs more on a store with deep queues, so the next
  // refresh waits at least ten times as long as the last one took (and
  // REFRESH_MS at the least); none runs while the page is hidden.

  const status = document.getElementById("status");
  let current = null; // the view's refresh
  let gen = 0;        // bumped by each route change
  let timer = 0;
  let every = REFRESH_MS;

  async function run(refresh) {
    const mine = gen;
    const t0 = performance.now();
    try {
      await refresh();
      if (mine !== gen) return;
      every = Math.max(REFRESH_MS, Math.ceil((performance.now() - t0) * 10 / 1000) * 1000);
      status.className = "";
      status.textContent = "Updated " + new Date().toLocaleTimeString("en-GB") + " · every " + every / 1000 + " s";
      document.body.setAttribute("data-loaded", String(mine));
    } catch (e) {
      if (mine !== gen) return;
      status.className = "error";
      status.textContent = "Cannot read the admin API: " + (e && e.message ? e.message : String(e));
    }
  }

  // refresh runs the view's refresh now, then again after every.
  async function refresh() {
    clearTimeout(timer);
    const mine = gen;
    await run(current);
    if (mine !== gen) return; // the route changed meanwhile: it has its own timer
    timer = setTimeout(() => { if (document.hidden) return; refresh(); }, every);
  }

  function route() {
    gen++;
    const r = parseHash();
    const root = document.getElementById("view");
    fill(root);
    document.body.removeAttribute("data-loaded");
    document.body.setAttribute("data-view", r.name);
    for (const a of document.querySelectorAll("nav a")) {
      const on = a.getAttribute("data-nav") === (r.name === "session" ? "sessions" : r.name);
      a.classList.toggle("current", on);
    }
    current = views[r.name](root, r);
    refresh();
  }

  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  route();
})();
