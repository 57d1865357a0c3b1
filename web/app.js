// The page: tabs, file drops, settings, and drawing what the worker returns. All work runs
// in worker.js (dsum-wasm); this file never blocks. `window.dsum` keeps the last results
// for the browser tests (tools/web/test.mjs).
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// Model files above this many bytes are refused before reading (override: ?max_mb=N).
const MAX_BYTES = Number(params.get("max_mb") || 1536) * 2 ** 20;

window.dsum = { ready: false, lastScore: null, lastSummary: null, lastModel: null };

// ---- the worker and its request/response protocol --------------------------------------
let worker = null;
let nextId = 1;
const pending = new Map(); // id -> {resolve, reject, onProgress, onToken}

function startWorker() {
  worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.onmessage = (e) => {
    const m = e.data;
    if (m.type === "ready") {
      window.dsum.ready = true;
      $("engine").textContent = `dsum-wasm ${m.version} ready`;
      document.body.dataset.ready = "1";
      updateButtons();
      return;
    }
    const p = pending.get(m.id);
    if (m.type === "fatal") {
      // The module trapped (usually out of memory): start a fresh worker, keep the page.
      for (const q of pending.values()) q.reject(new Error(m.message));
      pending.clear();
      restartWorker(m.message);
      return;
    }
    if (!p) return;
    if (m.type === "progress") p.onProgress?.(m);
    else if (m.type === "token") p.onToken?.(m);
    else if (m.type === "result") { pending.delete(m.id); p.resolve(m.value); }
    else if (m.type === "error") { pending.delete(m.id); p.reject(new Error(m.message)); }
  };
  worker.onerror = (e) => {
    e.preventDefault();
    const msg = `the worker failed: ${e.message || "unknown error"}`;
    for (const q of pending.values()) q.reject(new Error(msg));
    pending.clear();
    restartWorker(msg);
  };
}

function restartWorker(why) {
  worker.terminate();
  window.dsum.ready = false;
  modelLoaded = false;
  $("model-state").textContent = "no model loaded (the worker was restarted)";
  $("engine").textContent = "restarting dsum-wasm…";
  console.warn("restarting the worker:", why);
  startWorker();
}

function call(msg, { onProgress, onToken, transfer } = {}) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress, onToken });
    worker.postMessage({ id, ...msg }, transfer || []);
  });
}

function showError(el, err) {
  el.textContent = err ? String(err.message || err) : "";
  el.hidden = !err;
}

// ---- tabs -------------------------------------------------------------------------------
for (const t of document.querySelectorAll(".tab")) {
  t.addEventListener("click", () => {
    document.querySelectorAll(".tab").forEach((x) => x.classList.toggle("active", x === t));
    document.querySelectorAll(".panel").forEach((p) =>
      p.classList.toggle("active", p.id === `panel-${t.dataset.tab}`));
  });
}

// ---- Score tab --------------------------------------------------------------------------
const files = { pred: null, ref: null };

function wireDrop(which) {
  const drop = $(`drop-${which}`), input = $(`${which}-file`);
  const take = (f) => { if (!f) return; files[which] = f; $(`${which}-name`).textContent = f.name; updateButtons(); };
  input.addEventListener("change", () => take(input.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files[0]);
  });
}
wireDrop("pred");
wireDrop("ref");

let modelLoaded = false;
let busy = false;
function updateButtons() {
  const ready = window.dsum.ready && !busy;
  $("score-btn").disabled = !(ready && files.pred && files.ref);
  $("summarize-btn").disabled = !(ready && modelLoaded);
  $("load-url-btn").disabled = !ready;
}

const fmt = (x, d = 4) => Number(x).toFixed(d);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

$("score-btn").addEventListener("click", async () => {
  busy = true; updateButtons();
  showError($("score-error"), null);
  $("score-out").dataset.state = "running";
  const t0 = performance.now();
  try {
    const [pred, ref] = await Promise.all([files.pred, files.ref].map(async (f) =>
      ({ name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) })));
    const options = { flavor: $("flavor").value, tokenize: $("tokenize").value,
      multi_ref: $("multi-ref").value, empty: $("empty").value, worst: 10 };
    const r = await call({ cmd: "score", pred, ref, options });
    r.ms = performance.now() - t0;
    window.dsum.lastScore = r;
    drawScore(r);
  } catch (err) {
    $("score-out").hidden = true;
    showError($("score-error"), err);
  } finally {
    busy = false; updateButtons();
    $("score-out").dataset.state = "done";
  }
});

function drawScore(r) {
  $("final-score").textContent = fmt(r.final_score);
  $("sum-score").textContent = fmt(r.sum_score);
  $("row-count").textContent = r.count;
  $("score-time").textContent = `${(r.ms / 1000).toFixed(2)} s in the browser`;
  const metrics = ["rouge-1", "rouge-2", "rouge-l", "rouge-lsum"].filter((k) => r[k]);
  $("metrics").tBodies[0].innerHTML = metrics.map((k) =>
    `<tr><td>${k}</td><td class="num">${fmt(r[k].p)}</td><td class="num">${fmt(r[k].r)}</td><td class="num">${fmt(r[k].f)}</td></tr>`).join("");
  const topics = r.topics || [];
  $("topics-box").hidden = topics.length === 0;
  const top = Math.max(1, ...topics.map((t) => t.final));
  $("topic-bars").innerHTML = topics.map((t) =>
    `<div class="bar-row"><span>${esc(t.topic)} <small class="muted">(${t.count})</small></span>` +
    `<div class="bar"><div style="width:${(100 * t.final / top).toFixed(1)}%"></div></div>` +
    `<span class="num">${fmt(t.final, 2)}</span></div>`).join("");
  $("worst").tBodies[0].innerHTML = r.worst.map((w) =>
    `<tr><td>${esc(w.fname)}</td><td class="num">${fmt(w.final, 2)}</td><td class="num">${fmt(w["rouge-1"], 1)}</td>` +
    `<td class="num">${fmt(w["rouge-2"], 1)}</td><td class="num">${fmt(w["rouge-l"], 1)}</td>` +
    `<td>${esc(w.prediction)}</td><td>${esc(w.references.join(" | "))}</td></tr>`).join("");
  const old = $("download-items").href;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  $("download-items").href = URL.createObjectURL(new Blob([r.per_item_csv], { type: "text/csv" }));
  const warn = r.warnings || [];
  $("score-warnings").hidden = warn.length === 0;
  $("score-warnings").textContent = warn.join("\n");
  $("score-out").hidden = false;
}

$("mecab-files").addEventListener("change", async () => {
  const list = [...$("mecab-files").files];
  $("mecab-state").textContent = "loading…";
  try {
    const f = {};
    for (const x of list) f[x.name] = new Uint8Array(await x.arrayBuffer());
    const r = await call({ cmd: "mecab", files: f });
    $("mecab-state").textContent = `loaded (${r.morphs.join(" ")})`;
    $("tokenize").value = "mecab";
  } catch (err) {
    $("mecab-state").textContent = "not loaded";
    showError($("score-error"), err);
  }
});

// ---- Summarize tab ----------------------------------------------------------------------
function progress(m) {
  const pct = m.total ? Math.min(100, 100 * m.loaded / m.total) : 50;
  $("load-bar").style.width = `${pct.toFixed(1)}%`;
  const mb = (x) => (x / 2 ** 20).toFixed(1);
  $("model-state").textContent = m.total
    ? `${m.file}: ${mb(m.loaded)} / ${mb(m.total)} MB` : `${m.file}…`;
}

async function loadModel(msg) {
  busy = true; modelLoaded = false; updateButtons();
  showError($("model-error"), null);
  $("model-state").dataset.state = "loading";
  try {
    const info = await call({ maxBytes: MAX_BYTES, ...msg, cmd: "load" }, { onProgress: progress });
    window.dsum.lastModel = info;
    modelLoaded = true;
    $("load-bar").style.width = "100%";
    const g = info.generation;
    $("model-state").textContent = `${info.name}: ${info.family}, ${(info.parameters / 1e6).toFixed(1)}M parameters, ` +
      `vocab ${info.vocab_size}, loaded in ${(info.load_ms / 1000).toFixed(1)} s` +
      ` · defaults: beams ${g.num_beams ?? 1}, max_new_tokens ${g.max_new_tokens ?? "-"}, max_length ${g.max_length ?? "-"}`;
  } catch (err) {
    $("load-bar").style.width = "0";
    $("model-state").textContent = "no model loaded";
    showError($("model-error"), err);
  } finally {
    busy = false; updateButtons();
    $("model-state").dataset.state = "done";
  }
}

$("load-url-btn").addEventListener("click", () => {
  const url = $("model-url").value.trim();
  loadModel({ url, name: url });
});
for (const id of ["model-files", "model-folder"]) {
  $(id).addEventListener("change", () => {
    const list = [...$(id).files];
    if (!list.length) return;
    const name = list[0].webkitRelativePath ? list[0].webkitRelativePath.split("/")[0] : list.map((f) => f.name).join(", ");
    loadModel({ name, files: list.map((f) => ({ name: f.webkitRelativePath || f.name, file: f })) });
  });
}

// A CSV of dialogues (fname, dialogue): pick a row; the columns are checked in the worker.
let dialogues = [];
$("dialogue-csv").addEventListener("change", async () => {
  const f = $("dialogue-csv").files[0];
  if (!f) return;
  showError($("csv-error"), null);
  try {
    dialogues = await call({ cmd: "dialogues", name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) });
    const sel = $("dialogue-row");
    sel.innerHTML = dialogues.map((d, i) => `<option value="${i}">${esc(d.fname)}</option>`).join("");
    sel.hidden = false;
    $("dialogue").value = dialogues[0].dialogue;
  } catch (err) {
    $("dialogue-row").hidden = true;
    showError($("csv-error"), err);
  }
});
$("dialogue-row").addEventListener("change", () => {
  $("dialogue").value = dialogues[Number($("dialogue-row").value)].dialogue;
});

function generationSettings() {
  const g = {};
  const num = (id, key, parse = Number) => {
    const v = $(id).value.trim();
    if (v !== "") g[key] = parse(v);
  };
  num("num-beams", "num_beams");
  num("max-new-tokens", "max_new_tokens");
  num("no-repeat", "no_repeat_ngram_size");
  num("rep-penalty", "repetition_penalty");
  return { generation: g, prompt_preset: $("preset").value, no_chat_template: $("plain-prompt").checked };
}

$("summarize-btn").addEventListener("click", async () => {
  busy = true; updateButtons();
  showError($("gen-error"), null);
  const out = $("summary");
  out.textContent = "";
  out.classList.add("streaming");
  out.dataset.state = "running";
  $("gen-stats").textContent = "";
  let n = 0;
  const t0 = performance.now();
  try {
    const r = await call({ cmd: "summarize", dialogue: $("dialogue").value, options: generationSettings() }, {
      onToken: (m) => {
        n += 1;
        out.textContent = m.text;
        $("gen-stats").textContent = `${n} tokens, ${(n / ((performance.now() - t0) / 1000)).toFixed(1)} tok/s`;
      },
    });
    window.dsum.lastSummary = r;
    out.textContent = r.summary;
    $("gen-stats").textContent = `${r.new_tokens} tokens in ${(r.ms / 1000).toFixed(2)} s ` +
      `(${(r.new_tokens / (r.ms / 1000)).toFixed(1)} tok/s)${r.truncated ? " · input truncated" : ""}`;
    $("gen-ids").textContent = `input_ids: ${JSON.stringify(r.input_ids)}\nsequences: ${JSON.stringify(r.sequences)}`;
  } catch (err) {
    showError($("gen-error"), err);
  } finally {
    out.classList.remove("streaming");
    out.dataset.state = "done";
    busy = false; updateButtons();
  }
});

if (params.get("model")) $("model-url").value = params.get("model");
if (params.get("tab")) $(`tab-${params.get("tab")}`)?.click();
startWorker();
