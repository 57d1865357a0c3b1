// Browser tests of the page (web/), run by tools/web/test.sh in headless Chromium: the page's
// ROUGE equals `dsum-cli score --json`, its summaries of fixture models equal `dsum-cli
// generate` (ids and text) and `dsum-cli summarize`, bad input gives a readable message and
// leaves the page working, and each tab is screenshotted. With DSUM_WEB_BENCH=1 it also times
// SmolLM2 in the browser and ROUGE pairs per second (results in ARTIFACTS/bench.json).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const env = (k, d) => process.env[k] ?? d;
const ROOT = env("ROOT");
const CLI = env("DSUM_CLI");
const URL0 = `http://127.0.0.1:${env("PORT")}/index.html`;
const ART = env("ARTIFACTS");
const MECAB = env("DSUM_MECAB_DIC", "");
const BENCH = env("DSUM_WEB_BENCH", "0") === "1";
const { chromium } = await import(path.join(env("TOOLS"), "node_modules/playwright-core/index.mjs"));

const fx = (...p) => path.join(ROOT, "tests/fixtures", ...p);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dsum-web-"));
let failures = 0, passes = 0;
function check(ok, what, detail = "") {
  if (ok) { passes++; console.log(`ok   ${what}`); }
  else { failures++; console.log(`FAIL ${what}${detail ? `\n     ${detail}` : ""}`); }
}
const cli = (args) => execFileSync(CLI, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

/// Exact equality of two JSON values (numbers compared as the same f64); returns the first
/// difference or null.
function diff(a, b, at = "") {
  if (typeof a === "number" && typeof b === "number") return a === b ? null : `${at}: ${a} != ${b}`;
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return `${at}: length ${a.length} != ${b.length}`;
    for (let i = 0; i < a.length; i++) { const d = diff(a[i], b[i], `${at}[${i}]`); if (d) return d; }
    return null;
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    for (const k of Object.keys(b)) { const d = diff(a[k], b[k], `${at}.${k}`); if (d) return d; }
    return null;
  }
  return a === b ? null : `${at}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`;
}

/// tiny-llama.gguf with its first F32 tensor relabelled Q5_0 (a type dsum does not decode);
/// the sizes still fit, so only the type is wrong.
function writeBadTypeGguf(src, dst) {
  const b = fs.readFileSync(src);
  let o = 8; // magic, version
  const u32 = () => { const v = b.readUInt32LE(o); o += 4; return v; };
  const u64 = () => { const v = Number(b.readBigUInt64LE(o)); o += 8; return v; };
  const str = () => { const n = u64(); o += n; };
  const size = [1, 1, 2, 2, 4, 4, 4, 1, null, null, 8, 8, 8];
  const value = (t) => {
    if (t === 8) return str();
    if (t === 9) { const et = u32(), n = u64(); for (let i = 0; i < n; i++) value(et); return; }
    o += size[t];
  };
  const nt = u64(), nkv = u64();
  for (let i = 0; i < nkv; i++) { str(); value(u32()); }
  for (let i = 0; i < nt; i++) {
    str();
    const nd = u32();
    let numel = 1;
    for (let d = 0; d < nd; d++) numel *= u64();
    const at = o, ty = u32();
    u64();
    if (ty === 0 && numel % 32 === 0) { b.writeUInt32LE(6, at); fs.writeFileSync(dst, b); return; }
  }
  throw new Error(`${src}: no F32 tensor to relabel`);
}
writeBadTypeGguf(fx("gguf/tiny-llama.gguf"), path.join(ROOT, "web/models/fixtures/bad-type.gguf"));

// ---- browser ---------------------------------------------------------------------------
const ctx = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), "dsum-chromium-")), {
  executablePath: env("CHROMIUM", "/usr/bin/chromium"), headless: true,
  viewport: { width: 1200, height: 900 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = ctx.pages()[0] || await ctx.newPage();
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") console.log(`  [console] ${m.text()}`); });
page.setDefaultTimeout(120_000);

async function open(query = "") {
  await page.goto(URL0 + query);
  await page.waitForSelector("body[data-ready='1']");
}
async function tab(name) { await page.click(`#tab-${name}`); }
/// Clicks `button` after clearing `state`'s data-state, waits until it is `done`.
async function run(button, state) {
  await page.evaluate((s) => { document.querySelector(s).dataset.state = ""; }, state);
  await page.click(button);
  await page.waitForSelector(`${state}[data-state='done']`, { state: "attached" });
}
const visibleText = (sel) => page.evaluate((s) => {
  const el = document.querySelector(s); return el && !el.hidden ? el.textContent : "";
}, sel);

const bench = {};
try {
await open();
check(true, "page loads and dsum-wasm starts in a worker");

// ---- Score tab: the page's ROUGE equals dsum-cli score --json ---------------------------
async function scoreInPage(pred, ref, o) {
  await page.setInputFiles("#pred-file", pred);
  await page.setInputFiles("#ref-file", ref);
  await page.selectOption("#flavor", o.flavor);
  await page.selectOption("#tokenize", o.tokenize);
  await page.selectOption("#multi-ref", o.multi_ref);
  await page.selectOption("#empty", o.empty);
  await run("#score-btn", "#score-out");
  return page.evaluate(() => window.dsum.lastScore);
}

const cases = [
  { ref: "ref.csv", flavor: "rouge", tokenize: "whitespace", multi_ref: "max", empty: "zero" },
  { ref: "ref.csv", flavor: "rouge", tokenize: "char", multi_ref: "max", empty: "zero" },
  { ref: "ref_multi_cols.csv", flavor: "rouge", tokenize: "whitespace", multi_ref: "mean", empty: "skip" },
  { ref: "ref_multi_rows.csv", flavor: "rouge-score", tokenize: "default", multi_ref: "max", empty: "zero" },
  { ref: "ref_multi_cols.csv", flavor: "rouge-score", tokenize: "char", multi_ref: "max", empty: "skip" },
];
if (MECAB) {
  const dic = ["sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"].map((f) => path.join(MECAB, f));
  await page.setInputFiles("#mecab-files", dic);
  await page.waitForFunction(() => document.querySelector("#mecab-state").textContent.startsWith("loaded"));
  check(true, "the Mecab-ko dictionary loads from the user's files");
  cases.push({ ref: "ref.csv", flavor: "rouge", tokenize: "mecab", multi_ref: "max", empty: "zero" });
} else {
  console.log("skip Mecab-ko scoring (DSUM_MECAB_DIC not set)");
}
for (const c of cases) {
  const pred = fx("rouge/cli/pred.csv"), ref = fx("rouge/cli", c.ref);
  const items = path.join(tmp, "items.csv");
  const args = ["score", "--pred", pred, "--ref", ref, "--flavor", c.flavor, "--tokenize", c.tokenize,
    "--multi-ref", c.multi_ref, "--empty", c.empty, "--json", "--per-item", items];
  if (c.tokenize === "mecab") args.push("--mecab-dic", MECAB);
  const want = JSON.parse(cli(args));
  const got = await scoreInPage(pred, ref, c);
  const d = got ? diff(got, want) : "no result";
  check(!d, `score ${c.ref} ${c.flavor}/${c.tokenize}/${c.multi_ref}/${c.empty} equals dsum-cli score --json (${want.count} rows, final ${want.final_score})`, d);
  check(got && got.per_item_csv === fs.readFileSync(items, "utf8"), "  per-row CSV equals dsum-cli score --per-item");
}
await page.screenshot({ path: path.join(ART, "score.png"), fullPage: true });

// Bad input: a CSV with the wrong columns.
const bad = path.join(tmp, "bad_columns.csv");
fs.writeFileSync(bad, "id,text\n1,hello\n");
await page.setInputFiles("#pred-file", bad);
await run("#score-btn", "#score-out");
let err = await visibleText("#score-error");
check(err.includes("bad_columns.csv") && err.includes("missing column `fname`"),
  "a predictions CSV with the wrong columns: a message naming the file and column", err);
await page.setInputFiles("#pred-file", fx("rouge/cli/pred.csv"));
await run("#score-btn", "#score-out");
check(!(await visibleText("#score-error")) && (await page.evaluate(() => window.dsum.lastScore.count)) > 0,
  "the page still scores after the error");

// ---- Summarize tab: the page's summaries equal dsum-cli generate / summarize ------------
await tab("summarize");

async function loadUrl(url) {
  await page.fill("#model-url", url);
  await run("#load-url-btn", "#model-state");
  return visibleText("#model-error");
}
async function summarizeInPage(dialogue, o) {
  await page.fill("#dialogue", dialogue);
  await page.selectOption("#preset", o.preset || "en");
  for (const [id, v] of [["#num-beams", o.num_beams], ["#max-new-tokens", o.max_new_tokens],
    ["#no-repeat", undefined], ["#rep-penalty", undefined]]) await page.fill(id, v === undefined ? "" : String(v));
  await run("#summarize-btn", "#summary");
  const e = await visibleText("#gen-error");
  if (e) throw new Error(e);
  return page.evaluate(() => window.dsum.lastSummary);
}

const DIALOGUE = "#Person1#: 안녕하세요, 오늘 회의는 몇 시에 시작하나요?\n#Person2#: 3시에 시작합니다. 자료는 제가 준비할게요.";
for (const m of [{ dir: "bart/models/tiny-c", name: "tiny-c" }, { dir: "llama/models/llama-tied", name: "llama-tied" }]) {
  const e = await loadUrl(`models/fixtures/${m.name}/`);
  check(!e, `${m.name} loads from URLs beside the page`, e);
  const got = await summarizeInPage(DIALOGUE, { preset: "en" });
  // dsum-cli generate on the same input: the text (BART) or the same chat messages (causal LM).
  const line = got.messages ? { messages: got.messages } : { text: DIALOGUE };
  const inp = path.join(tmp, "in.jsonl"), out = path.join(tmp, "out.jsonl");
  fs.writeFileSync(inp, JSON.stringify(line) + "\n");
  cli(["generate", "--model", fx(m.dir), "--input", inp, "--output", out, "--quiet"]);
  const want = JSON.parse(fs.readFileSync(out, "utf8").trim());
  for (const k of ["input_ids", "sequences", "texts", "prompt", "sequence_scores"]) {
    if (want[k] === undefined) continue;
    // Ids and texts exactly; beam scores are f32 sums whose last bit depends on the
    // summation order of the native (AVX, FMA) and wasm kernels.
    const d = k === "sequence_scores"
      ? (got[k].every((x, i) => Math.abs(x - want[k][i]) <= 1e-5 * Math.max(1, Math.abs(want[k][i]))) ? null
        : `${got[k]} vs ${want[k]}`)
      : diff(got[k], want[k]);
    check(!d, `${m.name}: ${k} equals dsum-cli generate${k === "sequence_scores" ? " (f32, 1e-5 relative)" : ""}`, d);
  }
  if (!got.sequence_scores) {
    check(diff(got.streamed, got.sequences[0]) === null && got.streamed.length > 0,
      `${m.name}: the streamed tokens are the greedy sequence (${got.streamed.length} tokens)`);
  }
  const csv = path.join(tmp, "d.csv"), sub = path.join(tmp, "sub.csv");
  fs.writeFileSync(csv, `fname,dialogue\nx,"${DIALOGUE.replace(/"/g, '""')}"\n`);
  cli(["summarize", "--model", fx(m.dir), "--input", csv, "--output", sub, "--quiet", "--prompt-preset", "en"]);
  const rows = fs.readFileSync(sub, "utf8");
  const summary = rows.slice(rows.indexOf("\n") + 1).replace(/^x,/, "").replace(/\n$/, "");
  const unq = summary.startsWith('"') ? summary.slice(1, -1).replace(/""/g, '"') : summary;
  check(got.summary === unq, `${m.name}: the summary equals dsum-cli summarize`, `${JSON.stringify(got.summary)} vs ${JSON.stringify(unq)}`);
}

// Bad input: a dialogues CSV without `dialogue`, a model folder missing a file, a GGUF of an
// unsupported tensor type, a model too large for the page.
const badCsv = path.join(tmp, "no_dialogue.csv");
fs.writeFileSync(badCsv, "fname,text\na,hello\n");
await page.setInputFiles("#dialogue-csv", badCsv);
await page.waitForSelector("#csv-error:not([hidden])");
err = await visibleText("#csv-error");
check(err.includes("no_dialogue.csv") && err.includes("dialogue"), "a dialogues CSV without `dialogue`: a readable message", err);

const partial = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
  .map((f) => fx("llama/models/llama-tied", f));
await page.evaluate(() => { document.querySelector("#model-state").dataset.state = ""; });
await page.setInputFiles("#model-files", partial);
await page.waitForSelector("#model-state[data-state='done']", { state: "attached" });
err = await visibleText("#model-error");
check(err.includes("model.safetensors") && err.includes("missing"), "a model folder missing model.safetensors: a readable message", err);

err = await loadUrl("models/fixtures/bad-type.gguf");
check(err.includes("bad-type.gguf") && err.includes("not supported"), "a GGUF with an unsupported tensor type: a readable message", err);

await open("?max_mb=0.5&tab=summarize");
err = await loadUrl("models/fixtures/tiny-c/");
check(err.includes("too large"), "a model larger than the page's memory budget: a readable message before reading it", err);
await open("?tab=summarize");
err = await loadUrl("models/fixtures/llama-tied/");
const after = err ? null : await summarizeInPage("hello", {});
check(after && after.sequences[0].length > 0, "after the errors the page loads and summarizes again", err);

// ---- the demo model: SmolLM2-135M (GGUF) ------------------------------------------------
const smol = path.join(ROOT, "web/models/smollm2.gguf");
if (fs.existsSync(smol)) {
  const e = await loadUrl("models/smollm2.gguf");
  check(!e, "the demo model SmolLM2-135M (GGUF) loads", e);
  bench.smollm2_load_ms = (await page.evaluate(() => window.dsum.lastModel)).load_ms;
  const dialogues = JSON.parse(execFileSync("python3", ["-c",
    "import csv,sys,json; print(json.dumps([r['dialogue'] for r in csv.DictReader(open(sys.argv[1]))]))",
    path.join(ROOT, "examples/dialogues.csv")], { encoding: "utf8" }));
  const d0 = dialogues[0];
  const got = await summarizeInPage(d0, { preset: "en", max_new_tokens: 40 });
  check(got.summary.length > 0, `SmolLM2 summarizes in the browser: ${JSON.stringify(got.summary).slice(0, 120)}`);
  bench.smollm2 = { new_tokens: got.new_tokens, prompt_tokens: got.input_ids.length, ms: got.ms,
    first_token_ms: got.first_token_ms };
  // Native on the same prompt: same ids expected (f32 on both; reported, not asserted).
  const inp = path.join(tmp, "smol.jsonl"), out = path.join(tmp, "smol_out.jsonl");
  fs.writeFileSync(inp, JSON.stringify({ messages: got.messages }) + "\n");
  cli(["generate", "--model", smol, "--input", inp, "--output", out, "--quiet", "--max-new-tokens", "40"]);
  const want = JSON.parse(fs.readFileSync(out, "utf8").trim());
  bench.smollm2.same_ids_as_native = diff(got.sequences, want.sequences) === null;
  console.log(`     SmolLM2 in the browser: ${got.new_tokens} tokens in ${(got.ms / 1000).toFixed(2)} s; same ids as dsum-cli: ${bench.smollm2.same_ids_as_native}`);
} else {
  console.log("skip SmolLM2 (web/models/smollm2.gguf missing: run tools/web/build.sh)");
}
await page.screenshot({ path: path.join(ART, "summarize.png"), fullPage: true });

// ---- ROUGE throughput -------------------------------------------------------------------
if (BENCH) {
  // 10,000 distinct pairs (each copy of the fixture rows gets its own suffix, so no text
  // repeats), written to ARTIFACTS for the native run (dsum-wasm/examples/native_bench.rs).
  const bp = path.join(ART, "big_pred.csv"), br = path.join(ART, "big_ref.csv");
  execFileSync("python3", ["-c", `
import csv, sys
def big(src, dst, copies=250):
    rows = list(csv.DictReader(open(src, encoding="utf-8")))
    with open(dst, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for k in range(copies):
            for r in rows:
                r2 = dict(r, fname=f"c{k}_{r['fname']}")
                if r2.get("summary"):
                    r2["summary"] = f"{r2['summary']} 변형 {k}번 case{k}"
                w.writerow(r2)
big(sys.argv[1], sys.argv[3]); big(sys.argv[2], sys.argv[4])
`, fx("rouge/cli/pred.csv"), fx("rouge/cli/ref.csv"), bp, br]);
  await open();
  for (const tk of ["whitespace", ...(MECAB ? ["mecab"] : [])]) {
    if (tk === "mecab") {
      await page.setInputFiles("#mecab-files", ["sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"].map((f) => path.join(MECAB, f)));
      await page.waitForFunction(() => document.querySelector("#mecab-state").textContent.startsWith("loaded"));
    }
    const r = await scoreInPage(bp, br, { flavor: "rouge", tokenize: tk, multi_ref: "max", empty: "zero" });
    bench[`rouge_${tk}`] = { pairs: r.count, ms: r.ms, pairs_per_s: r.count / (r.ms / 1000) };
    console.log(`     ROUGE (${tk}) in the browser: ${r.count} pairs in ${(r.ms / 1000).toFixed(2)} s`);
  }
}
fs.writeFileSync(path.join(ART, "bench.json"), JSON.stringify(bench, null, 1));
} catch (e) {
  check(false, "the browser tests ran to the end", String(e.stack || e));
  await page.screenshot({ path: path.join(ART, "failure.png"), fullPage: true }).catch(() => {});
}

check(pageErrors.length === 0, "no uncaught errors in the page", pageErrors.join("\n"));
await ctx.close();
console.log(`\n${passes} passed, ${failures} failed; screenshots in ${ART}`);
process.exit(failures ? 1 : 0);
