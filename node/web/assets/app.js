// storemesh terminal page. Talks only to its own node (same origin), so it
// keeps working while the venue has no Internet. No framework, no build.
"use strict";

const state = {
  status: null, catalog: [], stock: [], sales: [], conflicts: [],
  cart: new Map(), // sku -> qty
  busy: false, live: false,
};

const $ = (id) => document.getElementById(id);

function token() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) localStorage.setItem("storemesh-token", decodeURIComponent(m[1]));
  return localStorage.getItem("storemesh-token") || "";
}

async function api(method, path, body, headers) {
  const h = Object.assign({}, headers || {});
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) $("token-form").hidden = false;
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || res.statusText);
    err.code = data && data.error && data.error.code;
    err.status = res.status;
    throw err;
  }
  return data;
}

function money(minor, currency) {
  const v = (minor / 100).toFixed(2);
  return currency ? v + " " + currency : v;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v);
  }
  for (const k of kids) if (k) e.append(k);
  return e;
}

function isAnchor() { return state.status && state.status.role === "anchor"; }

function saleStore() {
  if (!isAnchor()) return state.status ? state.status.store : "";
  return $("store-input").value.trim();
}

function onHand(sku) {
  const store = saleStore();
  const it = state.stock.find((s) => s.sku === sku && s.store === store);
  return it ? it.on_hand : 0;
}

function message(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

// ---- rendering ----

function renderCatalog() {
  const box = $("catalog");
  box.replaceChildren();
  $("catalog-empty").hidden = state.catalog.length > 0;
  for (const it of state.catalog) {
    box.append(el("button", {
      type: "button", id: "sku-" + it.sku, "data-testid": "sku-" + it.sku, "data-sku": it.sku,
      onclick: () => { state.cart.set(it.sku, (state.cart.get(it.sku) || 0) + 1); renderCart(); },
    }, el("span", { class: "sku-name", text: it.name }),
      el("span", { class: "sku-price", text: money(it.unit_price, it.currency) }),
      el("span", { class: "sku-stock", "data-testid": "sku-stock-" + it.sku, text: "on hand " + onHand(it.sku) })));
  }
}

function renderCart() {
  const body = $("cart-body");
  body.replaceChildren();
  let total = 0, currency = "";
  for (const [sku, qty] of state.cart) {
    const it = state.catalog.find((c) => c.sku === sku);
    if (!it) continue;
    total += qty * it.unit_price;
    currency = it.currency;
    const input = el("input", { type: "number", min: "1", value: String(qty), class: "cart-qty", "data-testid": "cart-qty-" + sku });
    input.addEventListener("change", () => {
      const q = parseInt(input.value, 10);
      if (q > 0) state.cart.set(sku, q); else state.cart.delete(sku);
      renderCart();
    });
    body.append(el("tr", { "data-testid": "cart-row-" + sku },
      el("td", { text: it.name }), el("td", {}, input),
      el("td", { class: "num", text: money(qty * it.unit_price) }),
      el("td", {}, el("button", { type: "button", "data-testid": "cart-remove-" + sku, text: "✕",
        onclick: () => { state.cart.delete(sku); renderCart(); } }))));
  }
  $("total").textContent = money(total, currency);
  $("charge").disabled = state.busy || state.cart.size === 0;
}

// allotText: an allotted SKU's units held here and where the others are.
function allotText(a) {
  if (!a) return "";
  const where = a.elsewhere.map((h) => h.units + " at " + h.name).join(", ");
  return a.here + " here" + (where ? " · " + where : " · none elsewhere");
}

function renderStock() {
  const names = new Map(state.catalog.map((c) => [c.sku, c.name]));
  const body = $("stock-body");
  body.replaceChildren();
  for (const s of state.stock) {
    const id = isAnchor() ? "stock-row-" + s.store + "-" + s.sku : "stock-row-" + s.sku;
    body.append(el("tr", { "data-testid": id, "data-store": s.store, "data-sku": s.sku, class: s.on_hand < 0 ? "negative" : "" },
      el("td", { text: s.store }), el("td", { text: s.sku }), el("td", { text: names.get(s.sku) || "" }),
      el("td", { class: "num", "data-testid": "stock-onhand-" + s.sku, text: String(s.on_hand) }),
      el("td", { "data-testid": "stock-allot-" + s.sku, text: allotText(s.allotment) })));
  }
  renderCatalog();
}

function renderSales() {
  const ul = $("sales");
  ul.replaceChildren();
  for (const s of state.sales) { // newest first
    const lines = (s.lines || []).map((l) => l.qty + "× " + l.sku).join(", ");
    ul.append(el("li", { "data-testid": "sale-row-" + s.sale_id },
      el("strong", { text: s.receipt_no }), " " + lines + " — " + money(s.total, s.currency) + " " + s.payment +
      (s.offline ? " (offline)" : "") + (s.refunded ? " refunded " + money(s.refunded) : "")));
  }
}

function renderStatus() {
  const st = state.status;
  if (!st) return;
  $("device-name").textContent = st.name || st.device.slice(-8);
  $("device-store").textContent = (st.role === "anchor" ? "anchor · every store" : st.role + " · store " + st.store);
  $("store-pick").hidden = st.role !== "anchor";
  const net = $("net-badge");
  if (st.role === "anchor") { net.textContent = "HQ"; net.className = "badge ok"; }
  else if (st.offline) { net.textContent = "offline"; net.className = "badge warn"; }
  else { net.textContent = "online"; net.className = "badge ok"; }
  $("queued-badge").textContent = st.queued_for_anchor + " queued for HQ";
  $("queued-badge").className = "badge" + (st.queued_for_anchor > 0 ? " warn" : "");
  $("queued").textContent = String(st.queued_for_anchor);
  $("last-anchor").textContent = st.role === "anchor" ? "this is HQ" : ago(st.last_anchor_contact);
  $("offline").textContent = st.offline ? "offline: the store's offline policy applies" : "online";
  const banner = $("storage-banner");
  const oc = st.own_chain;
  if (oc && oc.missing > 0) {
    banner.textContent = "This terminal's sales " + (oc.held + 1) + "–" + oc.recorded + " are missing here (" + oc.missing +
      ", per its " + oc.source + "): restored from an older copy, or lost by storage. Selling waits until the other terminals or HQ send them back" +
      (oc.wait_seconds > 0 ? ", " + Math.ceil(oc.wait_seconds) + " s at most; then it sells on a new chain." : ".");
    banner.hidden = false;
  } else if (st.copied) {
    banner.textContent = "Another machine is running as this terminal (a copy of its folders): both wrote sales as it. " +
      "Every sale is kept; this terminal now sells on chain " + (oc ? oc.epoch : "") + ". Stop the other machine.";
    banner.hidden = false;
  } else if (st.clones && st.clones.length > 0) {
    banner.textContent = st.clones.map(c => "Two machines are running as " + (c.name || c.device.slice(-8)) +
      (c.store ? " of " + c.store : "") + " (its device folder was copied): only one of them syncs. Stop the copy.").join(" ");
    banner.hidden = false;
  } else if (st.disk_full) {
    banner.textContent = "Disk full: sales are refused until space is freed on this terminal.";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  const ul = $("peers");
  ul.replaceChildren();
  if (st.peers.length === 0) ul.append(el("li", { class: "muted", text: "no peers yet" }));
  for (const p of st.peers) {
    const state_ = p.established ? "synced" : p.connected ? "connecting" : p.gone ? "gone" : "not connected";
    ul.append(el("li", { "data-testid": "peer-" + p.id, "data-found": p.found, "data-established": String(p.established) },
      el("strong", { text: p.name || p.id.slice(-8) }),
      " " + (p.role ? p.role + (p.store && p.store !== "*" ? " of " + p.store : "") : "") + " — " + state_ +
      " via " + p.found + (p.last_sync ? ", " + ago(p.last_sync) : "")));
  }
  const rv = $("revoked");
  rv.replaceChildren();
  if (!st.revoked || st.revoked.length === 0) rv.append(el("li", { class: "muted", text: "none" }));
  for (const d of st.revoked || []) {
    const cut = (d.cutoff || []).map(c => c.store + " #" + c.seq).join(", ") || "everything";
    rv.append(el("li", { "data-testid": "revoked-" + d.device },
      el("strong", { text: d.name || d.device.slice(-8) }),
      " " + d.role + (d.store && d.store !== "*" ? " of " + d.store : "") + " — kept up to " + cut +
      (d.reason ? "; " + d.reason : "") + " (by " + d.by.slice(-8) + ")"));
  }
}

function renderConflicts() {
  const ul = $("conflicts");
  ul.replaceChildren();
  if (state.conflicts.length === 0) ul.append(el("li", { class: "muted", text: "none" }));
  for (const c of state.conflicts) {
    const li = el("li", { "data-testid": "conflict-" + c.id, "data-resolved": String(!!c.resolution) },
      el("strong", { text: c.kind + " " + c.sku }),
      c.kind === "over_refund"
        ? " store " + c.store + ": refund " + c.refund_id.slice(0, 8) + " of sale " + c.sale_id.slice(0, 8) + " asked " +
          c.oversold + " unit(s) and " + money(c.excess_amount) + " more than the sale had left (not credited)"
        : " store " + c.store + ": " + c.oversold + " oversold by sale " + c.sale_id.slice(0, 8) + " (on hand " + c.on_hand + ")");
    if (c.resolution) {
      li.append(el("div", { class: "muted", text: "resolved: " + c.resolution.action + (c.resolution.note ? " — " + c.resolution.note : "") }));
    } else {
      const sel = el("select", { "data-testid": "resolve-action-" + c.id });
      for (const a of ["backorder", "substitute", "refund", "recount", "other"]) sel.append(el("option", { value: a, text: a }));
      const btn = el("button", { type: "button", "data-testid": "resolve-" + c.id, text: "Resolve" });
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          await api("POST", "/v1/conflicts/" + encodeURIComponent(c.id) + "/resolve", { action: sel.value, note: "resolved at the terminal" });
          await loadConflicts();
        } catch (e) { message("Could not resolve: " + e.message, "error"); btn.disabled = false; }
      });
      li.append(el("div", { class: "conflict-actions" }, sel, btn));
    }
    ul.append(li);
  }
}

// ---- loading ----

// Events can start a second fetch of a resource before the first answers,
// and the answers can arrive out of order: only the latest request's
// answer is applied, so an older one never overwrites a newer one.
const latest = {};
async function fetchLatest(path) {
  const n = (latest[path] = (latest[path] || 0) + 1);
  const data = await api("GET", path);
  return n === latest[path] ? data : null;
}

async function loadStatus() {
  const d = await fetchLatest("/v1/status");
  if (!d) return;
  const first = !state.status;
  state.status = d;
  renderStatus();
  if (first) renderStock(); // stock row ids and the catalog's on-hand depend on the role and store
}
async function loadCatalog() { const d = await fetchLatest("/v1/catalog"); if (d) { state.catalog = d.items; renderCatalog(); renderCart(); renderStock(); } }
async function loadStock() { const d = await fetchLatest("/v1/stock"); if (d) { state.stock = d.items; renderStock(); } }
async function loadSales() { const d = await fetchLatest("/v1/sales?order=desc&limit=10"); if (d) { state.sales = d.sales; renderSales(); } }
async function loadConflicts() { const d = await fetchLatest("/v1/conflicts"); if (d) { state.conflicts = d.conflicts; renderConflicts(); } }

const loaders = { status: loadStatus, catalog: loadCatalog, stock: loadStock, sales: loadSales, conflicts: loadConflicts };

async function loadAll() {
  await loadStatus();
  await Promise.all([loadCatalog(), loadStock(), loadSales(), loadConflicts()]);
}

function safe(p) { p.catch((e) => { if (e.status !== 401) console.warn(e); }); }

// ---- selling ----

function newKey() {
  const r = new Uint8Array(12);
  crypto.getRandomValues(r);
  return "page-" + Date.now().toString(36) + "-" + Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function charge() {
  if (state.cart.size === 0 || state.busy) return;
  state.busy = true;
  renderCart();
  const body = { lines: [...state.cart].map(([sku, qty]) => ({ sku, qty })), payment: { method: $("payment").value } };
  if (isAnchor()) body.store = saleStore();
  const key = newKey(); // one key per charge: a retry after a network error cannot sell twice
  let lastErr = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const res = await api("POST", "/v1/sales", body, { "Idempotency-Key": key });
      state.cart.clear();
      message("Sold: receipt " + res.receipt_no + ", " + money(res.total, res.currency) + (res.offline ? " (offline)" : ""), "ok");
      lastErr = null;
      break;
    } catch (e) {
      lastErr = e;
      if (e.status && e.status !== 503) break; // a refusal: retrying will not change it
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  if (lastErr) message("Not sold: " + lastErr.message + (lastErr.code ? " (" + lastErr.code + ")" : ""), "error");
  state.busy = false;
  renderCart();
  safe(loadSales());
  safe(loadStock());
}

// ---- live updates ----

function connectEvents() {
  const t = token();
  const es = new EventSource("/v1/events" + (t ? "?access_token=" + encodeURIComponent(t) : ""));
  const badge = $("live-badge");
  es.addEventListener("hello", () => { badge.textContent = "live"; badge.className = "badge ok"; safe(loadAll()); });
  for (const name of Object.keys(loaders)) es.addEventListener(name, () => safe(loaders[name]()));
  es.addEventListener("policy", () => safe(loadStatus()));
  es.addEventListener("resync", () => safe(loadAll()));
  es.onerror = () => { badge.textContent = "node unreachable"; badge.className = "badge bad"; };
}

document.addEventListener("DOMContentLoaded", () => {
  $("charge").addEventListener("click", charge);
  $("clear").addEventListener("click", () => { state.cart.clear(); renderCart(); message(""); });
  $("store-input").addEventListener("change", () => renderCatalog());
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem("storemesh-token", $("token-input").value);
    $("token-form").hidden = true;
    safe(loadAll());
    connectEvents();
  });
  safe(loadAll());
  connectEvents();
  setInterval(() => renderStatus(), 1000); // "x s ago"
});
