// crate-mirror dashboard: polls /api/stats and draws small charts. No framework,
// no build step. Errors are counted into #dashboard-state so a headless browser
// test can see them.
"use strict";

const state = document.getElementById("dashboard-state");
function noteError() {
  state.dataset.errors = String(Number(state.dataset.errors) + 1);
}
window.addEventListener("error", noteError);
window.addEventListener("unhandledrejection", noteError);

const $ = (id) => document.getElementById(id);
const HISTORY = 60;
const history = { hit: [], rps: [], latency: [] };
let previous = null;

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}
function percent(r) { return r === null || r === undefined ? "–" : (r * 100).toFixed(1) + " %"; }
function count(n) { return Number(n || 0).toLocaleString("en"); }
function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}
function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

function sparkline(canvas, values, { max = null, color = "#b7410e" } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  if (values.length < 2) return;
  const top = max ?? Math.max(...values, 1e-9);
  // Few samples yet: spread them over the whole width.
  const step = width / (values.length - 1);
  const x0 = 0;
  const y = (v) => height - 2 - (v / top) * (height - 4);
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(x0 + i * step, y(v)) : ctx.moveTo(x0, y(v))));
  ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.stroke();
  ctx.lineTo(x0 + (values.length - 1) * step, height); ctx.lineTo(x0, height); ctx.closePath();
  ctx.globalAlpha = 0.12; ctx.fillStyle = color; ctx.fill();
}

function rows(tbody, items, render, empty, columns) {
  tbody.replaceChildren();
  if (!items.length) {
    const tr = tbody.insertRow(); const td = tr.insertCell();
    td.colSpan = columns; td.className = "muted"; td.textContent = empty;
    return;
  }
  for (const item of items) {
    const tr = tbody.insertRow();
    for (const [text, cls] of render(item)) {
      const td = tr.insertCell(); td.textContent = text; if (cls) td.className = cls;
    }
  }
}

function render(s) {
  $("version").textContent = "v" + s.version;
  $("index-url").textContent = s.index_url;
  $("hit-ratio").textContent = percent(s.hit_ratio);
  $("requests").textContent = count(s.requests.total);
  $("bytes-served").textContent = bytes(s.bytes.served);
  $("bytes-fetched").textContent = bytes(s.bytes.fetched);
  const saved = s.bytes.served > 0 ? 1 - Math.min(1, s.bytes.fetched / s.bytes.served) : null;
  $("saving").textContent = percent(saved);
  const storage = s.storage || {};
  $("storage").textContent = storage.backend === "s3" ? "S3" : bytes(storage.bytes);
  const quota = storage.quota_bytes;
  $("storage-bar").style.width = quota ? Math.min(100, (100 * storage.bytes) / quota) + "%" : "0";
  $("storage-detail").textContent = storage.backend === "s3" ? "object storage"
    : count(storage.objects) + (storage.objects === 1 ? " crate" : " crates") + (quota ? " of " + bytes(quota) + " quota" : ", no quota");
  $("index-hits").textContent = count(s.index.hits);
  $("crate-hits").textContent = count(s.crates.hits);
  $("stale").textContent = count(s.index.stale_served);
  $("checksum").textContent = count(s.crates.checksum_failures);
  const prefetch = s.prefetch || {};
  $("prefetch-ratio").textContent = prefetch.started ? percent(prefetch.useful_ratio) : "–";
  $("prefetch-useful").textContent = count(prefetch.useful);
  $("prefetch-started").textContent = count(prefetch.started);
  const up = s.upstream;
  $("upstream-requests").textContent = count(up.requests);
  $("upstream-failures").textContent = count(up.failures);
  const pill = $("upstream-pill");
  if (!up.requests) { pill.className = "pill pill-unknown"; pill.textContent = "upstream: not asked yet"; }
  else if (up.healthy) { pill.className = "pill pill-ok"; pill.textContent = "upstream: healthy"; }
  else { pill.className = "pill pill-bad"; pill.textContent = "upstream: failing since " + ago(up.last_failure_ms); }

  // Rates and recent latency come from the difference between two polls.
  const now = Date.now();
  if (previous) {
    const seconds = Math.max(0.001, (now - previous.at) / 1000);
    const rps = (s.requests.total - previous.stats.requests.total) / seconds;
    $("rps").textContent = rps.toFixed(1);
    push(history.rps, rps);
    const n = up.latency_count - previous.stats.upstream.latency_count;
    const recent = n > 0 ? (up.latency_seconds_sum - previous.stats.upstream.latency_seconds_sum) / n : null;
    if (recent !== null) push(history.latency, recent * 1000);
  }
  const overall = up.latency_count ? (1000 * up.latency_seconds_sum) / up.latency_count : null;
  const shown = history.latency.length ? history.latency[history.latency.length - 1] : overall;
  $("latency").textContent = shown === null ? "–" : shown.toFixed(0) + " ms";
  if (s.hit_ratio !== null) push(history.hit, s.hit_ratio);
  previous = { at: now, stats: s };
  sparkline($("chart-hit"), history.hit, { max: 1, color: "#2e7d32" });
  sparkline($("chart-rps"), history.rps);
  sparkline($("chart-latency"), history.latency, { color: "#1565c0" });

  rows($("top-crates"), s.top_crates, (c) => [[c.name], [count(c.requests), "num"]], "no requests yet", 2);
  rows($("errors"), s.recent_errors, (e) => [[ago(e.time_ms)], [e.what], [e.status, "num"]], "none", 3);
  $("updated").textContent = "Updated " + new Date(now).toLocaleTimeString();
  state.dataset.loaded = String(Number(state.dataset.loaded) + 1);
}

// A private mirror's /api/stats needs a token (401 without, 403 for a wrong
// one). The page then asks for one instead of showing empty cards; it is kept
// in sessionStorage (this tab only, gone when it closes) and sent on each poll.
const TOKEN_KEY = "crate-mirror-token";
let locked = false;
let memoryToken = storedToken();

function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}
function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token then lasts until the page reloads.
  }
  memoryToken = token;
}

function lock(status, sentToken) {
  locked = true;
  if (status === 403 && sentToken) storeToken(null);
  $("locked-message").textContent = status === 403 && sentToken
    ? "That token was refused (403). Paste a client or metrics token of this mirror."
    : "Its figures need a token: paste a client or metrics token of this mirror.";
  $("locked").hidden = false;
  $("figures").hidden = true;
  $("tables").hidden = true;
  // The stats carry the public index URL; until they come, this page's origin.
  if ($("index-url").textContent === "…") $("index-url").textContent = location.origin + "/index/";
  $("updated").textContent = "";
  state.dataset.locked = "1";
}
function unlock() {
  locked = false;
  $("locked").hidden = true;
  $("figures").hidden = false;
  $("tables").hidden = false;
  state.dataset.locked = "0";
}

async function poll() {
  // Locked: no polling (each would be another refusal) until a token is given.
  if (locked) return;
  const token = memoryToken;
  try {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch("/api/stats", { cache: "no-store", headers });
    if (response.status === 401 || response.status === 403) {
      lock(response.status, token);
      return;
    }
    if (response.ok) {
      unlock();
      render(await response.json());
    }
  } catch (err) {
    // The mirror may be restarting: keep the last figures, try again.
    $("updated").textContent = "Mirror unreachable: " + err.message;
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  storeToken(token);
  $("token-input").value = "";
  locked = false;
  poll();
});

$("copy").addEventListener("click", async () => {
  const text = $("snippet").innerText;
  try {
    await navigator.clipboard.writeText(text);
    $("copy").textContent = "Copied";
  } catch {
    // Clipboard needs a secure context; select the text for a manual copy.
    const range = document.createRange();
    range.selectNodeContents($("snippet"));
    const selection = window.getSelection();
    selection.removeAllRanges(); selection.addRange(range);
    $("copy").textContent = "Selected";
  }
  setTimeout(() => ($("copy").textContent = "Copy"), 1500);
});

poll();
setInterval(poll, 2000);
