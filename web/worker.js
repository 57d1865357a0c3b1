// The Web Worker that owns dsum-wasm: scoring, model loading and generation run here so the
// page never freezes. Messages in: {id, cmd, ...}; out: {id, type: progress | token | result
// | error | fatal}. A WebAssembly trap (out of memory, a Rust panic) leaves the module
// unusable, so it is reported as `fatal` and the page starts a fresh worker.
import init, * as dsum from "./pkg/dsum_wasm.js";

let model = null;

const post = (msg) => self.postMessage(msg);

/// Reads a Response body with byte progress.
async function readBody(id, resp, name) {
  const total = Number(resp.headers.get("content-length")) || 0;
  if (!resp.body) return new Uint8Array(await resp.arrayBuffer());
  const reader = resp.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    post({ id, type: "progress", file: name, loaded, total });
  }
  const out = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) { out.set(c, off); off += c.length; }
  return out;
}

/// HEAD-free size check: the server's content-length, refused before any byte is read.
function checkSize(name, size, maxBytes) {
  if (size > maxBytes) {
    const gb = (x) => (x / 2 ** 30).toFixed(2) + " GB";
    throw new Error(
      `${name} is ${gb(size)}: too large for this page, which holds model files up to ` +
      `${gb(maxBytes)} in total (a browser tab's WebAssembly memory is at most 4 GB and ` +
      `the weights are expanded to f32 there). Use dsum-cli for this model.`);
  }
}

async function fetchFile(id, url, name, optional, budget) {
  const resp = await fetch(url);
  if (!resp.ok) {
    if (optional && resp.status === 404) return null;
    throw new Error(`${url}: HTTP ${resp.status} ${resp.statusText}`);
  }
  const size = Number(resp.headers.get("content-length")) || 0;
  checkSize(url, budget.used + size, budget.max);
  const bytes = await readBody(id, resp, name);
  budget.used += bytes.length;
  return bytes;
}

/// A `.gguf` URL, or a folder URL (ending in `/`) with a Hugging Face model's files.
async function fetchModel(id, url, maxBytes) {
  const budget = { used: 0, max: maxBytes };
  if (!url.endsWith("/")) {
    const name = url.split("/").pop();
    return [[name, await fetchFile(id, url, name, false, budget)]];
  }
  const files = [];
  const get = async (name, optional) => {
    const b = await fetchFile(id, url + name, name, optional, budget);
    if (b) files.push([name, b]);
    return b;
  };
  for (const [n, opt] of [["config.json", false], ["generation_config.json", true],
    ["tokenizer.json", true], ["tokenizer_config.json", true]]) {
    await get(n, opt);
  }
  const index = await get("model.safetensors.index.json", true);
  if (index) {
    const map = JSON.parse(new TextDecoder().decode(index)).weight_map || {};
    for (const shard of [...new Set(Object.values(map))]) await get(shard, true);
  } else {
    await get("model.safetensors", true);
  }
  return files;
}

async function handle(msg) {
  const { id, cmd } = msg;
  switch (cmd) {
    case "score": {
      const out = dsum.score(msg.pred.name, msg.pred.bytes, msg.ref.name, msg.ref.bytes,
        JSON.stringify(msg.options));
      return JSON.parse(out);
    }
    case "dialogues":
      return JSON.parse(dsum.dialogues(msg.name, msg.bytes));
    case "mecab": {
      const f = msg.files;
      const need = ["sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"];
      const missing = need.filter((n) => !f[n]);
      if (missing.length) throw new Error(`mecab-ko-dic: missing ${missing.join(", ")}`);
      dsum.load_mecab(f["sys.dic"], f["matrix.bin"], f["char.bin"], f["unk.dic"], f["dicrc"]);
      return { morphs: JSON.parse(dsum.morphs("아버지가방에들어가신다")) };
    }
    case "load": {
      if (model) { model.free(); model = null; }
      let files;
      if (msg.url) {
        files = await fetchModel(id, msg.url, msg.maxBytes);
      } else {
        const total = msg.files.reduce((s, f) => s + f.file.size, 0);
        checkSize(msg.files.map((f) => f.name).join(", "), total, msg.maxBytes);
        files = [];
        let loaded = 0;
        for (const f of msg.files) {
          files.push([f.name, new Uint8Array(await f.file.arrayBuffer())]);
          loaded += f.file.size;
          post({ id, type: "progress", file: f.name, loaded, total });
        }
      }
      post({ id, type: "progress", file: "building the model", loaded: 1, total: 1 });
      const t0 = performance.now();
      model = new dsum.Summarizer(msg.name, files.map((f) => f[0]), files.map((f) => f[1]));
      const info = JSON.parse(model.info());
      info.load_ms = performance.now() - t0;
      return info;
    }
    case "summarize": {
      if (!model) throw new Error("load a model first");
      const t0 = performance.now();
      let first = null; // the prompt's prefill plus one step
      const out = JSON.parse(model.summarize(msg.dialogue, JSON.stringify(msg.options),
        (token, text) => {
          if (first === null) first = performance.now() - t0;
          post({ id, type: "token", token, text });
        }));
      out.ms = performance.now() - t0;
      out.first_token_ms = first;
      return out;
    }
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

self.onmessage = async (e) => {
  const { id } = e.data;
  try {
    post({ id, type: "result", value: await handle(e.data) });
  } catch (err) {
    if (err instanceof WebAssembly.RuntimeError || err instanceof RangeError) {
      // The module is dead after a trap; memory exhaustion is the usual cause.
      post({ id, type: "fatal", message: `the browser ran out of memory or dsum hit an ` +
        `internal error (${err.message}); the worker was restarted, nothing else is lost` });
    } else {
      post({ id, type: "error", message: String(err && err.message || err) });
    }
  }
};

init().then(() => post({ type: "ready", version: dsum.version() }),
  (err) => post({ type: "fatal", message: `cannot start dsum-wasm: ${err}` }));
