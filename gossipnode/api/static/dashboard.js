// gossipnode dashboard: polls this node's REST API and draws what it says.
// Everything that comes from the network (node ids, addresses, reasons, roles) reaches the page
// only as text (textContent, createTextNode, setAttribute): this file never parses markup.
"use strict";
(function () {
  const POLL_MS = 1500;
  const KEY = "gossipnode.apiToken";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}

  // #token=... in the address (for links and scripts): kept in this tab, removed from the URL.
  if (location.hash.startsWith("#token=")) {
    sessionStorage.setItem(KEY, decodeURIComponent(location.hash.slice(7)));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = () => sessionStorage.getItem(KEY) || "";

  async function get(path) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const r = await fetch(path, { headers, cache: "no-store" });
    if (r.status === 401) throw new AuthError("needs a token");
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  // ---- small DOM helpers (text only) ----------------------------------------------------------
  function el(tag, cls, ...children) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  function setText(id, v) { $(id).textContent = v === null || v === undefined ? "–" : String(v); }
  function fill(tbody, rows, cols, emptyText) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", "", el("td", "empty", emptyText))]));
    if (!rows.length) tbody.firstChild.firstChild.colSpan = cols;
  }
  const num = (x, d) => (typeof x === "number" && isFinite(x) ? x.toFixed(d) : "–");
  function bytes(n) {
    if (typeof n !== "number") return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function duration(s) {
    if (typeof s !== "number") return "–";
    if (s < 120) return s.toFixed(0) + " s";
    if (s < 7200) return (s / 60).toFixed(0) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  const short = (id) => String(id).slice(0, 16);

  // ---- rendering ------------------------------------------------------------------------------
  function renderStatus(s) {
    document.title = "gossipnode " + short(s.node_id) + " · round " + s.round;
    setText("node-id", s.node_id);
    setText("network", "network " + s.network_id);
    setText("address", (s.addresses && s.addresses.length ? s.addresses : [s.address]).join(", "));
    setText("version", "v" + s.version + (s.protocol ? " · " + s.protocol : ""));
    setText("round", s.round);
    setText("model-round", "model of round " + s.model_round);
    setText("role", s.role);
    setText("trained", "trained " + s.rounds_trained + " · aggregated " + s.rounds_aggregated);
    const ev = s.last_eval;
    setText("accuracy", ev ? num(ev.accuracy, 3) : "–");
    setText("loss", ev ? num(ev.loss, 3) : "–");
    setText("eval-round", ev ? "round " + ev.round + ", " + ev.samples + " test samples" : "not evaluated yet");
    setText("device", "device " + s.device);
    setText("peers-count", s.peers_known + " / " + s.peers_active);
    setText("uptime", "up " + duration(s.uptime_s));
    setText("bytes", bytes(s.bytes_sent) + " / " + bytes(s.bytes_received));
    setText("messages", (s.messages_sent ?? "–") + " / " + (s.messages_received ?? "–") + " messages, " +
      (s.send_failures ?? 0) + " failed sends");
    renderAggregation(s.last_aggregation);
    const rej = Object.entries(s.messages_rejected || {}).sort((a, b) => b[1] - a[1]);
    fill($("rejections"), rej.map(([reason, n]) =>
      el("tr", "", el("td", "mono", reason), el("td", "num", n))), 2, "none");
  }

  function renderAggregation(a) {
    if (!a) {
      setText("agg-summary", "");
      fill($("aggregation"), [], 3, "this node has not aggregated yet");
      setText("zeroed", "–");
      return;
    }
    const weights = Object.entries(a.weights || {}).sort((x, y) => y[1] - x[1]);
    const zeroed = new Set(a.zeroed || []);
    const max = Math.max(1e-12, ...weights.map((w) => w[1]));
    setText("agg-summary", "round " + a.round + " · " + (a.contributors ?? weights.length) + " contributors" +
      (a.seconds !== undefined ? " · " + a.seconds + " s" : ""));
    fill($("aggregation"), weights.map(([who, w]) => {
      const bar = el("div", "bar");
      bar.style.width = Math.round(100 * Math.max(0, w) / max) + "%";
      const tr = el("tr", zeroed.has(who) ? "zeroed" : "", el("td", "mono id", short(who)),
        el("td", "num", num(w, 4)), el("td", "", bar));
      tr.title = String(who);
      return tr;
    }), 3, "no weights");
    setText("zeroed", zeroed.size ? [...zeroed].map(short).join(", ") : "none");
  }

  function renderPeers(peers, round) {
    peers.sort((a, b) => (b.active - a.active) || (b.last_active_round - a.last_active_round));
    const active = peers.filter((p) => p.active).length;
    setText("peers-summary", peers.length + " known, " + active + " active");
    fill($("peers"), peers.map((p) => {
      const since = round - p.last_active_round;
      const state = p.status === "leave" ? "left" : p.active ? "active" : "inactive";
      const tr = el("tr", "", el("td", "mono id", short(p.node_id)),
        el("td", "mono", (p.addresses || []).join(" ")),
        el("td", "num", p.last_active_round),
        el("td", "", el("span", p.active ? "dot on" : "dot"),
          state + (since > 0 ? " · " + since + (since === 1 ? " round ago" : " rounds ago") : " · now")));
      tr.title = String(p.node_id);
      return tr;
    }), 4, "no peers yet");
  }

  function renderRounds(rounds) {
    drawChart(rounds.filter((r) => typeof r.accuracy === "number" || typeof r.loss === "number"));
    const recent = rounds.slice(-8).reverse();
    fill($("rounds"), recent.map((r) => el("tr", "", el("td", "num", r.round),
      el("td", "", (r.roles || []).join(", ") || "–"), el("td", "num", num(r.accuracy, 3)),
      el("td", "num", num(r.loss, 3)),
      el("td", "num", typeof r.duration_s === "number" ? r.duration_s.toFixed(1) + " s" : "–"))),
    5, "no rounds yet");
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function drawChart(points) {
    const W = 1100, H = 240, L = 40, R = 44, T = 10, B = 26;
    const chart = $("chart");
    const parts = [];
    const x0 = points.length ? points[0].round : 0;
    const x1 = points.length ? Math.max(points[points.length - 1].round, x0 + 1) : 1;
    const losses = points.map((p) => p.loss).filter((v) => typeof v === "number" && isFinite(v));
    const lmax = Math.max(1e-9, ...losses) * 1.05;
    const X = (k) => L + (W - L - R) * (k - x0) / (x1 - x0);
    const Ya = (a) => T + (H - T - B) * (1 - a);
    const Yl = (l) => T + (H - T - B) * (1 - l / lmax);
    for (let i = 0; i <= 4; i++) {
      const y = Ya(i / 4);
      parts.push(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }));
      parts.push(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", class: "axis" }, (i / 4).toFixed(2)));
      parts.push(svg("text", { x: W - R + 6, y: y + 4, class: "axis" }, (lmax * i / 4).toFixed(2)));
    }
    const ticks = Math.min(8, x1 - x0);
    for (let i = 0; i <= ticks; i++) {
      const k = Math.round(x0 + (x1 - x0) * i / ticks);
      parts.push(svg("text", { x: X(k), y: H - 8, "text-anchor": "middle", class: "axis" }, k));
    }
    const line = (key, Y, cls) => {
      const pts = points.filter((p) => typeof p[key] === "number" && isFinite(p[key]))
        .map((p) => X(p.round).toFixed(1) + "," + Y(p[key]).toFixed(1));
      if (pts.length) parts.push(svg("polyline", { points: pts.join(" "), class: cls }));
    };
    line("accuracy", Ya, "acc");
    line("loss", Yl, "loss");
    if (!points.length) parts.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" },
      "no evaluated rounds yet"));
    chart.replaceChildren(...parts);
    chart.dataset.points = String(points.length);
  }

  // ---- the loop ---------------------------------------------------------------------------------
  function setConn(cls, text) { const c = $("conn"); c.className = "conn " + cls; c.textContent = text; }
  function showAuth(show) {
    $("auth").hidden = !show;
    $("main").hidden = show;
    $("forget-token").hidden = !token();
  }

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    try {
      const [st, rd, pe] = await Promise.all([get("v1/status"), get("v1/rounds?limit=200"), get("v1/peers")]);
      showAuth(false);
      renderStatus(st);
      renderPeers(pe.peers || [], st.round);
      renderRounds(rd.rounds || []);
      setConn("live", "live · " + new Date().toLocaleTimeString());
    } catch (e) {
      if (e instanceof AuthError) {
        showAuth(true);
        setText("auth-error", token() ? "the token was not accepted" : "");
        setConn("auth", "needs a token");
      } else {
        setConn("error", "no answer: " + e.message);
      }
    }
    timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("auth").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(KEY, $("auth-token").value.trim());
      $("auth-token").value = "";
      poll();
    });
    $("forget-token").addEventListener("click", (ev) => {
      ev.preventDefault();
      sessionStorage.removeItem(KEY);
      poll();
    });
    poll();
  });
})();
