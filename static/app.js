// crate-mirror dashboard: polls /api/stats and draws small charts; loads the
// settings once and the cached crates only when their list is opened or
// searched. No framework, no build step. Everything a client or the upstream
// could have chosen (paths, names, versions) is written with textContent, never
// as HTML. Script errors, anything the Content-Security-Policy blocked, and what
// has loaded are counted into #dashboard-state, so a headless browser test can
// see them.
"use strict";

const state = document.getElementById("dashboard-state");
function noteError() {
  state.dataset.errors = String(Number(state.dataset.errors) + 1);
}
window.addEventListener("error", noteError);
window.addEventListener("unhandledrejection", noteError);
document.addEventListener("securitypolicyviolation", noteError);

const $ = (id) => document.getElementById(id);
const HISTORY = 60;
const series = { hit: [], rps: [], latency: [] };
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
  return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : s < 172800 ? Math.round(s / 3600) + " h ago" : Math.round(s / 86400) + " d ago";
}
function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
  if (d) return d + " d " + h + " h";
  if (h) return h + " h " + m + " min";
  if (m) return m + " min " + s + " s";
  return s + " s";
}
function clock(ms) { return new Date(ms).toLocaleTimeString(); }
function push(values, value) {
  values.push(value);
  if (values.length > HISTORY) values.shift();
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
  const y = (v) => height - 2 - (v / top) * (height - 4);
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(i * step, y(v)) : ctx.moveTo(0, y(v))));
  ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.stroke();
  ctx.lineTo((values.length - 1) * step, height); ctx.lineTo(0, height); ctx.closePath();
  ctx.globalAlpha = 0.12; ctx.fillStyle = color; ctx.fill();
}

// Table rows from `items`; `render` gives each row's cells as [text, class,
// title] (text only: textContent).
function rows(tbody, items, render, empty, columns) {
  tbody.replaceChildren();
  if (!items.length) {
    const tr = tbody.insertRow(); const td = tr.insertCell();
    td.colSpan = columns; td.className = "muted"; td.textContent = empty;
    return;
  }
  for (const item of items) {
    const tr = tbody.insertRow();
    for (const [text, cls, title] of render(item)) {
      const td = tr.insertCell(); td.textContent = text;
      if (cls) td.className = cls;
      if (title) td.title = title;
    }
  }
}

function errorRow(e) {
  return [
    [clock(e.time_ms), "when", ago(e.time_ms)],
    [e.method + " " + e.path, "path"],
    [String(e.status), "num"],
  ];
}

function render(s) {
  $("version").textContent = "v" + s.version;
  $("hit-ratio").textContent = percent(s.hit_ratio);
  $("requests").textContent = count(s.requests.client);
  $("bytes-served").textContent = bytes(s.bytes.served);
  $("bytes-fetched").textContent = bytes(s.bytes.fetched);
  $("bytes-avoided").textContent = bytes(s.bytes.avoided);
  $("saving-wrap").hidden = s.bytes.avoided_ratio === null;
  $("saving").textContent = percent(s.bytes.avoided_ratio);
  const storage = s.storage || {};
  $("storage").textContent = storage.backend === "s3" ? "S3" : bytes(storage.bytes);
  const quota = storage.quota_bytes;
  $("storage-bar").style.width = quota ? Math.min(100, (100 * storage.bytes) / quota) + "%" : "0";
  $("storage-detail").textContent = storage.backend === "s3" ? "object storage"
    : count(storage.objects) + (storage.objects === 1 ? " crate file" : " crate files") + (quota ? " of " + bytes(quota) + " quota" : ", no quota");
  const memory = s.index_memory || {};
  $("index-memory").textContent = bytes(memory.bytes);
  $("index-memory-plain").textContent = bytes(memory.plain_bytes);
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
  if (s.offline) { pill.className = "pill pill-unknown"; pill.textContent = "offline: no upstream"; }
  else if (!up.requests) { pill.className = "pill pill-unknown"; pill.textContent = "upstream: not asked yet"; }
  else if (up.healthy) { pill.className = "pill pill-ok"; pill.textContent = "upstream: healthy"; }
  else { pill.className = "pill pill-bad"; pill.textContent = "upstream: failing since " + ago(up.last_failure_ms); }
  $("uptime").textContent = duration(s.uptime_seconds);
  $("error-count").textContent = count(s.requests.errors);
  const mirror = s.mirror || {};
  $("mode").textContent = mirror.mode || "–";
  $("about-upstream").textContent = mirror.upstream || "–";
  $("about-version").textContent = mirror.version || "–";
  $("about-mode").textContent = mirror.mode === "private" ? "private (every registry request needs a token)" : "public";
  $("tokens-in-clear").hidden = !mirror.tokens_in_clear;
  $("about-public-url").textContent = mirror.public_url || "from each request's Host";
  $("about-storage").textContent = mirror.storage || "–";
  $("about-started").textContent = new Date(Date.now() - s.uptime_seconds * 1000).toLocaleString() + " (" + duration(s.uptime_seconds) + ")";

  // Rates and recent latency come from the difference between two polls.
  const now = Date.now();
  if (previous) {
    const seconds = Math.max(0.001, (now - previous.at) / 1000);
    const rps = Math.max(0, s.requests.client - previous.stats.requests.client) / seconds;
    $("rps").textContent = rps.toFixed(1);
    push(series.rps, rps);
    const n = up.latency_count - previous.stats.upstream.latency_count;
    const recent = n > 0 ? (up.latency_seconds_sum - previous.stats.upstream.latency_seconds_sum) / n : null;
    if (recent !== null) push(series.latency, recent * 1000);
  }
  const overall = up.latency_count ? (1000 * up.latency_seconds_sum) / up.latency_count : null;
  const shown = series.latency.length ? series.latency[series.latency.length - 1] : overall;
  $("latency").textContent = shown === null ? "–" : shown.toFixed(0) + " ms";
  if (s.hit_ratio !== null) push(series.hit, s.hit_ratio);
  previous = { at: now, stats: s };
  sparkline($("chart-hit"), series.hit, { max: 1, color: "#2e7d32" });
  sparkline($("chart-rps"), series.rps);
  sparkline($("chart-latency"), series.latency, { color: "#1565c0" });

  rows($("top-crates"), s.top_crates, (c) => [[c.name], [count(c.requests), "num"]], "no requests yet", 2);
  const errors = s.recent_errors || {};
  rows($("missing"), errors.missing || [], errorRow, "none", 3);
  rows($("errors"), errors.failures || [], errorRow, "none", 3);
  $("updated").textContent = "Updated " + new Date(now).toLocaleTimeString();
  state.dataset.loaded = String(Number(state.dataset.loaded) + 1);
}

// The snippet comes from the mirror (open, like this page): a public mirror
// is a source; a private one a registry with a credential provider, plus how
// to give cargo the token.
async function loadSnippet() {
  try {
    const response = await fetch("/api/cargo-config", { cache: "no-store" });
    if (!response.ok) return;
    const config = await response.json();
    $("snippet-text").textContent = config.config_toml;
    $("index-url").textContent = config.index_url;
    $("snippet-login").hidden = !config.private;
    if (config.private) {
      $("snippet-login-command").textContent = config.login_command;
      $("snippet-token-env").textContent = config.token_env;
    }
    state.dataset.snippet = "1";
  } catch (err) {
    $("snippet-text").textContent = "Mirror unreachable: " + err.message;
  }
}

// A private mirror's /api/ figures need a token (401 without, 403 for a wrong
// one). The page then asks for one instead of showing empty cards; it is kept
// in sessionStorage (this tab only, gone when it closes) and sent with each
// request for figures.
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

const GUARDED = ["figures", "tables", "crates-card", "about-card"];
function lock(status, sentToken) {
  locked = true;
  if (status === 403 && sentToken) storeToken(null);
  $("locked-message").textContent = status === 403 && sentToken
    ? "That token was refused (403). Paste a client or metrics token of this mirror."
    : "Its figures need a token: paste a client or metrics token of this mirror.";
  $("locked").hidden = false;
  for (const id of GUARDED) $(id).hidden = true;
  // The upstream's health is one of the figures: unknown here, and the
  // upstream itself needs nothing from this page.
  const pill = $("upstream-pill");
  pill.className = "pill pill-unknown"; pill.textContent = "figures need a token";
  $("updated").textContent = "";
  state.dataset.locked = "1";
}
function unlock() {
  locked = false;
  $("locked").hidden = true;
  for (const id of GUARDED) $(id).hidden = false;
  state.dataset.locked = "0";
}

// GETs one of the guarded /api/ figures with the token; locks the page when
// refused. Resolves to the JSON, or null.
async function guarded(path) {
  const token = memoryToken;
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { cache: "no-store", headers });
  if (response.status === 401 || response.status === 403) {
    lock(response.status, token);
    return null;
  }
  return response.ok ? response.json() : null;
}

let settingsLoaded = false;
async function loadSettings() {
  const body = await guarded("/api/settings");
  if (!body) return;
  settingsLoaded = true;
  rows($("settings"), body.settings, (s) => [[s.key, "key"], [s.value, "value"], [s.source, "source"]], "none", 3);
  state.dataset.settingsLoaded = String(Number(state.dataset.settingsLoaded) + 1);
}

async function poll() {
  // Locked: no polling (each would be another refusal) until a token is given.
  if (locked) return;
  try {
    const stats = await guarded("/api/stats");
    if (!stats) return;
    unlock();
    render(stats);
    if (!settingsLoaded) await loadSettings();
  } catch (err) {
    // The mirror may be restarting: keep the last figures, try again.
    $("updated").textContent = "Mirror unreachable: " + err.message;
  }
}

// The cached crates: fetched only when the list is opened or searched (each
// is one pass over the store's records), a page of 50 crates at a time.
const crates = { query: "", page: 1 };
async function loadCrates() {
  $("crates-summary").textContent = "loading…";
  try {
    const params = new URLSearchParams({ q: crates.query, page: String(crates.page) });
    const body = await guarded("/api/crates?" + params);
    if (!body) return;
    rows($("crates"), body.crates, (c) => [
      [c.name, "name"],
      [c.versions.map((v) => v.version + " (" + bytes(v.size) + ")").join(", "), "versions"],
      [bytes(c.bytes), "num"],
      c.last_access_ms ? [ago(c.last_access_ms), "when", new Date(c.last_access_ms).toLocaleString()] : ["–", "when"],
    ], body.query ? "no cached crate matches “" + body.query + "”" : "no crates cached yet", 4);
    const matching = count(body.crates_matching) + (body.crates_matching === 1 ? " crate, " : " crates, ")
      + count(body.versions_matching) + (body.versions_matching === 1 ? " version, " : " versions, ") + bytes(body.bytes_matching);
    $("crates-summary").textContent = (body.query ? "matching “" + body.query + "”: " : "") + matching;
    $("crates-page").textContent = "page " + body.page + " of " + body.pages;
    $("crates-prev").disabled = body.page <= 1;
    $("crates-next").disabled = body.page >= body.pages;
    crates.page = body.page;
    state.dataset.cratesLoaded = String(Number(state.dataset.cratesLoaded) + 1);
  } catch (err) {
    $("crates-summary").textContent = "could not list: " + err.message;
  }
}

$("crates-panel").addEventListener("toggle", () => {
  if ($("crates-panel").open) loadCrates();
});
$("crates-form").addEventListener("submit", (event) => {
  event.preventDefault();
  crates.query = $("crates-query").value.trim();
  crates.page = 1;
  // The search is in the address, so it can be shared or reloaded.
  const url = new URL(location.href);
  if (crates.query) url.searchParams.set("crates", crates.query); else url.searchParams.delete("crates");
  history.replaceState(null, "", url);
  loadCrates();
});
$("crates-prev").addEventListener("click", () => { crates.page -= 1; loadCrates(); });
$("crates-next").addEventListener("click", () => { crates.page += 1; loadCrates(); });

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  storeToken(token);
  $("token-input").value = "";
  locked = false;
  poll();
  if ($("crates-panel").open) loadCrates();
});

$("copy").addEventListener("click", async () => {
  const text = $("snippet-text").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy").textContent = "Copied";
  } catch {
    // Clipboard needs a secure context; select the text for a manual copy.
    const range = document.createRange();
    range.selectNodeContents($("snippet-text"));
    const selection = window.getSelection();
    selection.removeAllRanges(); selection.addRange(range);
    $("copy").textContent = "Selected";
  }
  setTimeout(() => ($("copy").textContent = "Copy"), 1500);
});

// `/?crates=NAME` opens the list searched for NAME.
const linked = new URLSearchParams(location.search).get("crates");
if (linked !== null) {
  crates.query = linked;
  $("crates-query").value = linked;
  $("crates-panel").open = true;
}

loadSnippet();
poll();
setInterval(poll, 2000);
