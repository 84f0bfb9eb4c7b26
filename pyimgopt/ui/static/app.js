// pyimgopt web UI. Talks only to its own server: the per-launch token rides
// on every request (header for fetch, query for EventSource and images).
"use strict";

const TOKEN = document.querySelector('meta[name="pyimgopt-token"]').content;
const $ = (id) => document.getElementById(id);
const state = { seq: 0, batch: null, rows: new Map(), sortKey: "idx", sortDir: 1,
                selected: new Set(), cwd: null, roots: [], es: null, rowsDirty: false };

function q(params) {
  const u = new URLSearchParams(params);
  u.set("token", TOKEN);
  return u.toString();
}

async function api(path, body) {
  const opts = { headers: { "X-Pyimgopt-Token": TOKEN } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({ error: { code: "http", message: r.statusText } }));
  if (!r.ok) {
    const e = new Error(data.error ? `${data.error.code}: ${data.error.message}` : r.statusText);
    e.status = r.status;
    throw e;
  }
  return data;
}

function human(n) {
  if (n === null || n === undefined) return "–";
  const sign = n < 0 ? "-" : "";
  n = Math.abs(n);
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return sign + (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function duration(s) {
  if (!isFinite(s) || s < 0) return "–";
  if (s < 10) return s.toFixed(1) + "s";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
}

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

function notice(msg) {
  const n = $("notice");
  n.textContent = msg;
  n.hidden = !msg;
}

// ---- file browser --------------------------------------------------------------

async function browse(path) {
  let data;
  try {
    data = await api("/api/browse?" + q(path ? { path } : {}));
  } catch (e) { notice(e.message); return; }
  notice("");
  state.cwd = data.path;
  $("cwd").textContent = data.path || "(folders this UI may use)";
  $("up").disabled = !data.path;
  $("up").dataset.parent = data.parent || "";
  const ul = $("entries");
  ul.replaceChildren();
  for (const ent of data.entries) {
    const box = el("input", { type: "checkbox", checked: state.selected.has(ent.path) });
    box.dataset.path = ent.path;
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(ent.path); else state.selected.delete(ent.path);
      drawSelected();
    });
    const name = ent.dir
      ? el("button", { type: "button", className: "link", textContent: ent.name + "/" })
      : el("span", { textContent: ent.name });
    if (ent.dir) name.addEventListener("click", () => browse(ent.path));
    const li = el("li", {}, box, " ", name, ent.dir ? "" : el("small", { textContent: " " + human(ent.size) }));
    li.dataset.name = ent.name;
    ul.append(li);
  }
  if (!data.entries.length) ul.append(el("li", { className: "muted", textContent: "no folders or images here" }));
}

function drawSelected() {
  const ul = $("selected");
  ul.replaceChildren();
  for (const p of state.selected) {
    const rm = el("button", { type: "button", className: "link", textContent: "remove" });
    rm.addEventListener("click", () => { state.selected.delete(p); drawSelected(); browse(state.cwd); });
    ul.append(el("li", {}, el("code", { textContent: p }), " ", rm));
  }
  $("sel-count").textContent = state.selected.size;
}

// ---- settings and start ----------------------------------------------------------

function formSettings() {
  const s = { format: $("format").value, fit: $("fit").value,
              keep_metadata: $("keep_metadata").checked, lossy_png: $("lossy_png").checked };
  for (const k of ["quality", "max_width", "max_height", "effort"]) {
    if ($(k).value !== "") s[k] = parseInt($(k).value, 10);
  }
  if ($("target_ssim").value !== "") s.target_ssim = parseFloat($("target_ssim").value);
  if ($("target_size").value.trim() !== "") s.target_size = $("target_size").value.trim();  // the server parses it
  if ($("min_scale").value !== "") s.min_scale = parseFloat($("min_scale").value);
  if ($("mark").checked) s.mark = true;
  if ($("lossless").checked) s.lossless = true;  // unchecked: each format's default
  if (s.format === "auto") {
    s.formats_allowed = [...document.querySelectorAll("#allowed input:checked")].map((b) => b.value);
  }
  return s;
}

// The auto formats: one checkbox each, the browser formats ticked; shown for "auto" only.
function drawAllowed(names, ticked) {
  const box = $("allowed");
  box.replaceChildren();
  for (const f of names) {
    const input = el("input", { type: "checkbox", value: f, id: "allow-" + f, checked: ticked.includes(f) });
    box.append(el("label", { className: "check" }, input, " " + f));
  }
}

function showAllowed() { $("auto-formats").hidden = $("format").value !== "auto"; }

async function start() {
  $("start-error").textContent = "";
  const body = { paths: [...state.selected], settings: formSettings(),
                 force: $("force").checked, dry_run: $("dry_run").checked };
  if ($("dest-inplace").checked) body.in_place = true; else body.out_dir = $("out_dir").value;
  $("start").disabled = true;
  try {
    await api("/api/batch", body);
  } catch (e) {
    $("start-error").textContent = e.message;
    $("start").disabled = false;
  }
}

async function control(action) {
  if (!state.batch) return;
  try {
    await api(`/api/batch/${state.batch.id}/${action}`, {});
  } catch (e) { notice(e.message); }
}

// ---- batch and rows ----------------------------------------------------------------

function saving(r) {
  if (r.bytes_in && r.bytes_out !== null && r.bytes_out !== undefined) return 1 - r.bytes_out / r.bytes_in;
  return null;
}

function drawBatch() {
  const b = state.batch;
  const running = b && !b.finished;
  $("start").disabled = !!running;
  $("pause").disabled = !running || b.paused;
  $("resume").disabled = !running || !b.paused;
  $("cancel").disabled = !running;
  if (!b) return;
  const pct = b.total ? Math.round((100 * b.processed) / b.total) : (b.finished ? 100 : 0);
  const fill = $("bar-fill");
  fill.style.width = pct + "%";
  fill.dataset.percent = String(pct);
  $("bar-fill").parentElement.dataset.percent = String(pct);
  const elapsed = b.elapsed + (b.finished || b.paused ? 0 : (Date.now() - state.batchAt) / 1000);
  const rate = b.processed / Math.max(elapsed, 0.001);
  const eta = b.finished ? 0 : (b.paused ? NaN : (b.total - b.processed) / rate);
  const pctSaved = b.bytes_in ? ((100 * b.saved) / b.bytes_in).toFixed(1) : "0.0";
  $("dryrun-banner").hidden = !b.dry_run;
  $("summary").textContent =
    `${b.processed} / ${b.total} files (${pct} %) · ${b.optimized} optimized · ${b.skipped} skipped · ${b.unchanged} unchanged · ` +
    `${b.failed} failed` + (b.cancelled_files ? ` · ${b.cancelled_files} cancelled` : "") +
    ` · ${b.dry_run ? "would save" : "saved"} ${human(b.saved)} (${pctSaved} %) of ${human(b.bytes_in)} · ` +
    (b.finished ? `took ${duration(b.elapsed)}` : `elapsed ${duration(elapsed)} · ETA ${b.paused ? "paused" : duration(eta)}`);
  $("state").textContent = b.finished ? (b.cancelled ? "cancelled" : "done") : (b.paused ? "paused" : "running");
  $("state").dataset.state = $("state").textContent;
}

const COLS = ["idx", "input", "status", "bytes_in", "bytes_out", "saving", "message", "ssim"];

function rowCells(tr, r) {
  const s = saving(r);
  const vals = [String(r.idx + 1), r.name || r.input,
                r.dry_run ? `${r.status} (dry run)` : r.status, human(r.bytes_in),
                r.bytes_out === null ? "–" : human(r.bytes_out) + (r.format_out ? " " + r.format_out.toUpperCase() : ""),
                s === null ? "–" : (100 * s).toFixed(1) + " %",
                r.code ? `${r.code}: ${r.message}` : "",
                r.ssim === null || r.ssim === undefined ? "–" : r.ssim.toFixed(4)];
  vals.forEach((v, i) => { if (tr.cells[i].textContent !== v) tr.cells[i].textContent = v; });
  tr.cells[1].title = r.input;
  tr.dataset.status = r.status;
  tr.className = "st-" + r.status;
  const can = r.status === "optimized" || r.status === "skipped" || r.status === "unchanged";
  tr.cells[8].firstChild.disabled = !can;
}

function upsertRow(r) {
  let entry = state.rows.get(r.idx);
  if (!entry) {
    const tr = el("tr");
    for (let i = 0; i < COLS.length; i++) tr.append(el("td", { className: [3, 4, 5, 7].includes(i) ? "num" : "" }));
    const btn = el("button", { type: "button", className: "link pv", textContent: "preview", disabled: true });
    btn.addEventListener("click", () => preview(r.idx));
    tr.append(el("td", {}, btn));
    tr.dataset.idx = String(r.idx);
    entry = { tr, r };
    state.rows.set(r.idx, entry);
    state.rowsDirty = true;
  }
  entry.r = r;
  rowCells(entry.tr, r);
  if (state.sortKey !== "idx") state.rowsDirty = true;
}

function sortValue(r, key) {
  if (key === "saving") return saving(r) ?? -Infinity;
  const v = r[key];
  return v === null || v === undefined ? -Infinity : v;
}

function redrawOrder() {
  if (!state.rowsDirty) return;
  state.rowsDirty = false;
  const entries = [...state.rows.values()];
  const k = state.sortKey, d = state.sortDir;
  entries.sort((a, b) => {
    const x = sortValue(a.r, k), y = sortValue(b.r, k);
    return (x < y ? -1 : x > y ? 1 : a.r.idx - b.r.idx) * d;
  });
  $("rows").replaceChildren(...entries.map((e) => e.tr));
}

function sortBy(key) {
  state.sortDir = state.sortKey === key ? -state.sortDir : 1;
  state.sortKey = key;
  for (const th of document.querySelectorAll("#table th")) {
    th.dataset.sorted = th.dataset.key === key ? (state.sortDir > 0 ? "asc" : "desc") : "";
  }
  state.rowsDirty = true;
  redrawOrder();
}

function drawStatus(st) {
  $("st-sidecars").textContent = st.sidecars;
  $("st-busy").textContent = st.busy ?? 0;
  $("st-memory").textContent = human(st.rss) + (st.memory_budget ? ` (budget ${human(st.memory_budget)})` : "");
}

// ---- preview ----------------------------------------------------------------------

function preview(idx) {
  const e = state.rows.get(idx);
  if (!e || !state.batch) return;
  const r = e.r;
  const src = (which) => "/api/preview?" + q({ batch: state.batch.id, row: idx, which });
  $("preview").hidden = false;
  $("pv-name").textContent = r.input;
  $("pv-asize").textContent = human(r.bytes_out) + (r.format_out ? " " + r.format_out.toUpperCase() : "");
  $("pv-info").textContent = r.width ? `${r.width}×${r.height} px out, shown at true pixels` : "";
  $("pv-bsize").textContent = human(r.bytes_in);
  if (state.batch.in_place && r.status === "optimized" && !r.dry_run) {
    // the original was replaced: only the result exists any more
    $("pv-bsize").textContent += " · replaced in place, no longer on disk";
    for (const id of ["pv-before", "pv-cbefore"]) $(id).removeAttribute("src");
  } else {
    for (const id of ["pv-before", "pv-cbefore"]) $(id).src = src("before");
  }
  if (r.dry_run) {  // nothing was written: only the original exists
    $("pv-asize").textContent += " · dry run, not written";
    for (const id of ["pv-after", "pv-cafter"]) $(id).removeAttribute("src");
  } else {
    for (const id of ["pv-after", "pv-cafter"]) $(id).src = src("after");
  }
  $("preview").scrollIntoView();
}

function previewMode() {
  const slider = $("pv-slider").checked;
  $("pv-sbs").hidden = slider;
  $("pv-cmp").hidden = !slider;
  clip();
}

function clip() {
  $("pv-clip").style.width = $("pv-range").value + "%";
}

// The slider overlays both images, so "before" is drawn at the output's size
// when a resize changed it (side by side shows both at true pixels).
function fitSlider() {
  const a = $("pv-cafter"), b = $("pv-cbefore");
  const differ = a.naturalWidth && b.naturalWidth &&
    (a.naturalWidth !== b.naturalWidth || a.naturalHeight !== b.naturalHeight);
  b.style.width = differ ? a.naturalWidth + "px" : "";
  b.style.height = differ ? a.naturalHeight + "px" : "";
  $("pv-scaled").hidden = !differ;
}

// ---- live stream ----------------------------------------------------------------------

function apply(kind, data) {
  if (kind === "row") upsertRow(data);
  else if (kind === "batch") {
    if (!state.batch || state.batch.id !== data.id) { state.rows.clear(); $("rows").replaceChildren(); }
    state.batch = data;
    state.batchAt = Date.now();
    drawBatch();
  } else if (kind === "status") drawStatus(data);
  else if (kind === "notice") notice(data.message);
}

async function load() {
  const snap = await api("/api/state");
  state.seq = snap.seq;
  state.roots = snap.roots;
  state.rows.clear();
  $("rows").replaceChildren();
  state.batch = snap.batch;
  state.batchAt = Date.now();
  for (const r of snap.rows) upsertRow(r);
  state.rowsDirty = true;
  redrawOrder();
  drawBatch();
  drawStatus(snap.status);
  return snap;
}

function follow() {
  if (state.es) state.es.close();
  const es = new EventSource("/api/events?" + q({ since: state.seq }));
  state.es = es;
  for (const kind of ["row", "batch", "status", "notice"]) {
    es.addEventListener(kind, (ev) => {
      state.seq = Number(ev.lastEventId) || state.seq;
      apply(kind, JSON.parse(ev.data));
    });
  }
  es.addEventListener("reset", async () => { es.close(); await load(); follow(); });
}

async function init() {
  const snap = await load();
  const fmt = $("format"), fit = $("fit");
  for (const f of snap.formats) fmt.append(el("option", { value: f, textContent: f }));
  for (const f of snap.fits) fit.append(el("option", { value: f, textContent: f }));
  const prior = snap.batch ? snap.batch.settings || {} : {};
  drawAllowed(snap.auto_formats, Array.isArray(prior.formats_allowed) ? prior.formats_allowed : snap.browser_formats);
  for (const [k, v] of Object.entries(prior)) {
    const input = $(k);
    if (!input) continue;
    if (input.type === "checkbox") input.checked = !!v; else input.value = v;
  }
  if (snap.batch) { $("force").checked = !!snap.batch.force; $("dry_run").checked = !!snap.batch.dry_run; }
  fmt.addEventListener("change", showAllowed);
  showAllowed();
  $("out_dir").value = snap.batch && snap.batch.out_dir ? snap.batch.out_dir
    : (snap.roots.length ? snap.roots[0].replace(/\/$/, "") + "/optimized" : "");
  if (!snap.in_place_allowed) $("dest-inplace").disabled = true;
  $("up").addEventListener("click", () => browse($("up").dataset.parent || null));
  $("start").addEventListener("click", start);
  for (const a of ["pause", "resume", "cancel"]) $(a).addEventListener("click", () => control(a));
  for (const th of document.querySelectorAll("#table th[data-key]")) th.addEventListener("click", () => sortBy(th.dataset.key));
  $("pv-side").addEventListener("change", previewMode);
  $("pv-slider").addEventListener("change", previewMode);
  $("pv-range").addEventListener("input", clip);
  $("pv-cafter").addEventListener("load", fitSlider);
  $("pv-cbefore").addEventListener("load", fitSlider);
  $("pv-close").addEventListener("click", () => { $("preview").hidden = true; });
  setInterval(() => { redrawOrder(); if (state.batch && !state.batch.finished && !state.batch.paused) drawBatch(); }, 250);
  await browse(snap.roots.length === 1 ? snap.roots[0] : null);
  follow();
  document.body.dataset.ready = "1";
}

init().catch((e) => notice("could not load: " + e.message));
