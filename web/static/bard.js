// bard.js: a bard artifact in the browser, on onnxruntime-web. One ES module, no build step.
//
//   import { load } from "./bard.js";
//   const bard = await load();                          // reads bard-site.json beside the page
//   await bard.generate("ROMEO:", {maxNewChars: 200, temperature: 0.8, seed: 1});
//   for await (const step of bard.stream("ROMEO:", {maxNewChars: 200})) step.char;
//   await bard.score("Shall I compare thee");           // {totalNats, characters, ...}
//
// The vocabulary, the graph's input and output names, the state shape and the manifest format
// come from the artifact's manifest.json; nothing of the contract is repeated here. Sampling
// follows bard_sdk exactly (temperature / top-k / top-p, a counter-based random stream per seed:
// splitmix64), so greedy text equals the SDK's and a seed gives the same text on every run.

const PREFILL_CHUNK = 256; // characters per graph call while feeding text, as bard_sdk
const SCORE_CHUNK = 4096; // characters per graph call while scoring, as bard_sdk
const TEMPERATURE_FLOOR = 1e-6; // below it sampling is greedy, as bard_sdk
const MAX_NEW_CHARS = 1e9;
const MASK64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;
const MIX1 = 0xbf58476d1ce4e5b9n;
const MIX2 = 0x94d049bb133111ebn;
const GENERATE_OPTIONS = ["maxNewChars", "temperature", "topK", "topP", "seed", "stop"];
const TEXT_OPTIONS = ["onUnknown", "replacement"];

/** Every error bard.js raises on purpose; `param` names the option it is about. */
export class BardError extends Error {
  constructor(message, param = null) {
    super(message);
    this.name = "BardError";
    this.param = param;
  }
}

function show(value) {
  let text;
  try {
    text = typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    text = typeof value;
  }
  return text.length > 60 ? text.slice(0, 57) + "..." : text;
}

async function fetchChecked(url, what, integrity) {
  let response;
  try {
    response = await fetch(url, integrity ? {integrity} : {});
  } catch (err) {
    throw new BardError(`cannot fetch ${what} (${url}): ${err.message}`);
  }
  if (!response.ok) throw new BardError(`cannot fetch ${what} (${url}): HTTP ${response.status}`);
  return response;
}

async function fetchJson(url, what) {
  const response = await fetchChecked(url, what);
  try {
    return await response.json();
  } catch {
    throw new BardError(`${what} is not valid JSON: ${url}`);
  }
}

async function sha256Hex(bytes) {
  if (!globalThis.crypto || !crypto.subtle) return null; // not a secure context: cannot check
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ------------------------------------------------------------------ the contract, from the manifest

/** The graph contract as the manifest states it: names, dtypes, state and vocabulary sizes. */
function readContract(manifest, formatVersion) {
  if (!manifest || typeof manifest !== "object") throw new BardError("manifest is not an object");
  if (!Number.isInteger(manifest.format_version) || manifest.format_version > formatVersion) {
    throw new BardError(`manifest format ${show(manifest.format_version)} is not one this site ` +
                        `reads (up to ${formatVersion}); rebuild the site with a newer bard`);
  }
  const vocabulary = manifest.vocabulary;
  const graph = manifest.graph;
  if (!Array.isArray(vocabulary) || !graph || !Array.isArray(graph.inputs) ||
      !Array.isArray(graph.outputs) || graph.inputs.length !== 3 || graph.outputs.length !== 3) {
    throw new BardError("manifest has no vocabulary or no graph section with 3 inputs, 3 outputs");
  }
  const [tokens, h0, c0] = graph.inputs;
  const [logits, hn, cn] = graph.outputs;
  const layers = h0.shape[0];
  const hidden = h0.shape[2];
  const vocabSize = logits.shape[2];
  const ok = tokens.dtype === "int64" && [h0, c0, hn, cn, logits].every((t) => t.dtype === "float32")
    && Number.isInteger(layers) && Number.isInteger(hidden) && vocabSize === vocabulary.length
    && [c0, hn, cn].every((t) => t.shape[0] === layers && t.shape[2] === hidden);
  if (!ok) throw new BardError("manifest graph section does not describe a character LSTM");
  const index = new Map();
  vocabulary.forEach((ch, i) => {
    if (typeof ch !== "string" || Array.from(ch).length !== 1 || index.has(ch)) {
      throw new BardError(`manifest vocabulary entry ${i} is not a new single character`);
    }
    index.set(ch, i);
  });
  return {
    inputs: [tokens.name, h0.name, c0.name], outputs: [logits.name, hn.name, cn.name],
    layers, hidden, vocabulary, index, vocabSize, paddingId: graph.padding_id,
  };
}

// ------------------------------------------------------------------ checking options (once)

function checkKeys(options, allowed) {
  if (options === null || typeof options !== "object") {
    throw new BardError(`options must be an object, got ${show(options)}`);
  }
  const unknown = Object.keys(options).filter((k) => !allowed.includes(k));
  if (unknown.length) {
    throw new BardError(`unknown option ${show(unknown[0])}; the options are ${allowed.join(", ")}`,
                        unknown[0]);
  }
}

function integerOption(value, name, low, high) {
  if (!Number.isInteger(value) || value < low || value > high) {
    throw new BardError(`${name} must be an integer in [${low}, ${high}], got ${show(value)}`, name);
  }
  return value;
}

function numberOption(value, name, test, range) {
  if (typeof value !== "number" || !Number.isFinite(value) || !test(value)) {
    throw new BardError(`${name} must be a number ${range}, got ${show(value)}`, name);
  }
  return value;
}

function seedKey(seed) {
  if (seed === undefined || seed === null) {
    const words = crypto.getRandomValues(new Uint32Array(2));
    return splitmix64((BigInt(words[0]) << 32n) | BigInt(words[1]));
  }
  const ok = (typeof seed === "bigint" || Number.isSafeInteger(seed)) && seed >= 0 &&
    BigInt(seed) <= MASK64;
  if (!ok) throw new BardError(`seed must be an integer in [0, 2**64), got ${show(seed)}`, "seed");
  return splitmix64(BigInt(seed));
}

// ------------------------------------------------------------------ sampling, as bard_sdk.sampling

function splitmix64(x) {
  let z = (x + GOLDEN) & MASK64;
  z = ((z ^ (z >> 30n)) * MIX1) & MASK64;
  z = ((z ^ (z >> 27n)) * MIX2) & MASK64;
  return z ^ (z >> 31n);
}

/** The uniform in [0, 1) of decode step `step` for the stream keyed `key`. */
function uniform(key, step) {
  const bits = splitmix64((key + BigInt(step) * GOLDEN) & MASK64);
  return Number(bits >> 11n) / 2 ** 53;
}

/** numpy's pairwise sum of a float64 array (8 accumulators, blocks of 128), bit for bit. */
function pairwiseSum(a, start, n) {
  if (n < 8) {
    let s = 0;
    for (let i = start; i < start + n; i++) s += a[i];
    return s;
  }
  if (n <= 128) {
    const r = [a[start], a[start + 1], a[start + 2], a[start + 3], a[start + 4], a[start + 5],
               a[start + 6], a[start + 7]];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) s += a[start + i];
    return s;
  }
  let half = Math.floor(n / 2);
  half -= half % 8;
  return pairwiseSum(a, start, half) + pairwiseSum(a, start + half, n - half);
}

function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** The next id from float32 logits: greedy, or temperature / top-k / top-p with uniform `u`. */
function sample(logits, params, u) {
  if (params.greedy) return argmax(logits);
  const n = logits.length;
  const z = new Float64Array(n);
  for (let i = 0; i < n; i++) z[i] = logits[i] / params.temperature;
  if (params.topK !== null && params.topK < n) {
    const kth = Float64Array.from(z).sort()[n - params.topK];
    for (let i = 0; i < n; i++) if (z[i] < kth) z[i] = -Infinity;
  }
  let top = -Infinity;
  for (let i = 0; i < n; i++) if (z[i] > top) top = z[i];
  const p = new Float64Array(n);
  for (let i = 0; i < n; i++) p[i] = Math.exp(z[i] - top);
  if (params.topP !== null && params.topP < 1) {
    const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]); // stable, as numpy's
    const sorted = Float64Array.from(order, (i) => p[i]);
    const limit = params.topP * pairwiseSum(sorted, 0, n);
    let cumulative = 0;
    for (let j = 0; j < n; j++) {
      cumulative += sorted[j];
      if (cumulative - sorted[j] > limit) p[order[j]] = 0;
    }
  }
  const cdf = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) cdf[i] = total += p[i];
  const threshold = u * cdf[n - 1];
  let chosen = 0;
  for (let i = 0; i < n; i++) if (cdf[i] <= threshold) chosen++;
  return Math.min(chosen, n - 1);
}

/** log softmax of one row of logits (float64), as bard_sdk's score computes it. */
function logSoftmax(logits, offset, n) {
  let top = -Infinity;
  for (let i = 0; i < n; i++) top = Math.max(top, logits[offset + i]);
  const z = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    z[i] = logits[offset + i] - top;
    total += Math.exp(z[i]);
  }
  const log = Math.log(total);
  for (let i = 0; i < n; i++) z[i] -= log;
  return z;
}

// ------------------------------------------------------------------ the model

/**
 * Load a site's model. `options.site`: URL of bard-site.json (default: beside the page);
 * `options.backend`: "auto" (WebGPU where the browser has it, else WASM), "wasm" or "webgpu";
 * `options.threads`: WASM threads (default: onnxruntime-web's; more than 1 needs a
 * cross-origin-isolated page).
 */
export async function load(options = {}) {
  checkKeys(options, ["site", "backend", "threads"]);
  const siteUrl = new URL(options.site ?? "bard-site.json", document.baseURI);
  const site = await fetchJson(siteUrl, "site configuration");
  const runtime = site.runtime;
  const backend = await chooseBackend(options.backend ?? "auto", runtime);
  const build = runtime.builds[backend];
  const base = new URL(runtime.base, siteUrl);
  const moduleUrl = new URL(build.module, base).href;
  let ort;
  try {
    ort = await import(moduleUrl); // the page's import map pins it by hash
  } catch (err) {
    throw new BardError(`cannot load onnxruntime-web (${moduleUrl}): ${err.message}`);
  }
  ort.env.wasm.wasmPaths = base.href;
  const binary = await fetchChecked(new URL(build.binary, base), "onnxruntime-web binary",
                                    runtime.integrity[build.binary]);
  ort.env.wasm.wasmBinary = await binary.arrayBuffer();
  if (options.threads !== undefined) {
    ort.env.wasm.numThreads = integerOption(options.threads, "threads", 1, 64);
  }
  const manifestUrl = new URL(site.manifest, siteUrl);
  const manifest = await fetchJson(manifestUrl, "manifest");
  const contract = readContract(manifest, site.format_version);
  const model = await fetchModel(new URL(site.model, siteUrl), manifest);
  let session;
  try {
    session = await ort.InferenceSession.create(model, {executionProviders: [backend]});
  } catch (err) {
    throw new BardError(`onnxruntime-web cannot run this model on ${backend}: ${err.message}`);
  }
  const names = (list) => list.join(", ");
  if (names(session.inputNames) !== names(contract.inputs) ||
      names(session.outputNames) !== names(contract.outputs)) {
    throw new BardError(`model graph has inputs ${names(session.inputNames)} and outputs ` +
                        `${names(session.outputNames)}; the manifest declares ` +
                        `${names(contract.inputs)} -> ${names(contract.outputs)}`);
  }
  return new Bard(ort, session, manifest, contract, site, backend);
}

async function chooseBackend(asked, runtime) {
  if (!["auto", "wasm", "webgpu"].includes(asked)) {
    throw new BardError(`backend must be "auto", "wasm" or "webgpu", got ${show(asked)}`, "backend");
  }
  const hasGpu = async () => {
    try {
      return Boolean(navigator.gpu && await navigator.gpu.requestAdapter());
    } catch {
      return false;
    }
  };
  if (asked === "wasm") return "wasm";
  if (!runtime.builds.webgpu) {
    if (asked === "webgpu") throw new BardError("this site was built without WebGPU", "backend");
    return "wasm";
  }
  if (await hasGpu()) return "webgpu";
  if (asked === "webgpu") throw new BardError("this browser offers no WebGPU adapter", "backend");
  return "wasm";
}

async function fetchModel(url, manifest) {
  const entry = manifest.files && manifest.files.fp32;
  if (!entry) throw new BardError("manifest lists no fp32 model");
  const bytes = new Uint8Array(await (await fetchChecked(url, "model")).arrayBuffer());
  const digest = await sha256Hex(bytes);
  if (bytes.length !== entry.bytes || (digest !== null && digest !== entry.sha256)) {
    throw new BardError(`model file does not match its manifest (size or sha256 differ): ${url}`);
  }
  return bytes;
}

class Bard {
  constructor(ort, session, manifest, contract, site, backend) {
    this.ort = ort;
    this.manifest = manifest;
    this.vocabulary = contract.vocabulary;
    this.backend = backend;
    this.threads = backend === "wasm" ? ort.env.wasm.numThreads : null;
    this._session = session;
    this._contract = contract;
    this._emptyPromptId = site.empty_prompt_id;
    this._queue = Promise.resolve(); // onnxruntime-web runs one call at a time per session
  }

  /** Ids of `text` (one per code point); unknown characters: onUnknown "error" | "skip" |
   *  "replace" (with `replacement`, a character of the vocabulary), as bard_sdk. */
  encode(text, options = {}) {
    checkKeys(options, TEXT_OPTIONS);
    if (typeof text !== "string") throw new BardError(`text must be a string, got ${show(text)}`);
    const {index} = this._contract;
    const onUnknown = options.onUnknown ?? "error";
    if (!["error", "skip", "replace"].includes(onUnknown)) {
      throw new BardError(`onUnknown must be "error", "skip" or "replace", got ${show(onUnknown)}`,
                          "onUnknown");
    }
    const replacement = index.get(options.replacement);
    if (onUnknown === "replace" && replacement === undefined) {
      throw new BardError("onUnknown \"replace\" needs a replacement character from the " +
                          `vocabulary, got ${show(options.replacement)}`, "replacement");
    }
    const ids = [];
    const unknown = [];
    let position = 0;
    for (const ch of text) {
      const id = index.get(ch);
      if (id !== undefined) ids.push(id);
      else if (onUnknown === "replace") ids.push(replacement);
      else if (onUnknown === "error") unknown.push([position, ch]);
      position++;
    }
    if (unknown.length) {
      const shown = unknown.slice(0, 10).map(([p, ch]) => `${JSON.stringify(ch)} at ${p}`);
      const more = unknown.length > 10 ? ` and ${unknown.length - 10} more` : "";
      throw new BardError(`${unknown.length} character(s) not in the model's vocabulary: ` +
                          `${shown.join(", ")}${more} (pass onUnknown: "skip" or "replace")`,
                          "text");
    }
    return ids;
  }

  decode(ids) {
    return Array.from(ids, (i) => this.vocabulary[i]).join("");
  }

  zeroState() {
    const {layers, hidden} = this._contract;
    const make = () => new this.ort.Tensor("float32", new Float32Array(layers * hidden),
                                           [layers, 1, hidden]);
    return {h: make(), c: make()};
  }

  /** One graph call: ids (a tensor [1, time]) from `state` -> logits (flat) and the new state. */
  async _run(tokens, state) {
    const [tokensName, hName, cName] = this._contract.inputs;
    const [logitsName, hnName, cnName] = this._contract.outputs;
    const run = this._queue.then(() => this._session.run(
      {[tokensName]: tokens, [hName]: state.h, [cName]: state.c}));
    this._queue = run.catch(() => {});
    const out = await run;
    return {logits: out[logitsName].data, state: {h: out[hnName], c: out[cnName]}};
  }

  _tokens(ids) {
    return new this.ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
  }

  /** A stateful continuation of `prompt` (see Session). */
  async session(prompt = "", options = {}) {
    const session = new Session(this, this.zeroState(), null, 0);
    if (prompt !== "") await session.feed(prompt, options);
    return session;
  }

  _split(options) {
    const textOptions = {};
    const generateOptions = {};
    for (const [key, value] of Object.entries(options ?? {})) {
      (TEXT_OPTIONS.includes(key) ? textOptions : generateOptions)[key] = value;
    }
    return [textOptions, generateOptions];
  }

  /** The continuation of `prompt` as one string (the prompt not included). */
  async generate(prompt, options = {}) {
    let text = "";
    for await (const step of this.stream(prompt, options)) text += step.char;
    return text;
  }

  /** The continuation of `prompt`, one Step per character as it is made. */
  async *stream(prompt, options = {}) {
    checkKeys(options ?? {}, [...GENERATE_OPTIONS, ...TEXT_OPTIONS]);
    const [textOptions, generateOptions] = this._split(options);
    const settings = this._settings(generateOptions); // checked before any work
    if (typeof prompt !== "string") throw new BardError(`prompt must be a string, got ${show(prompt)}`);
    const session = await this.session(prompt, textOptions);
    yield* session._steps(settings);
  }

  /** Log-likelihood of `text` from the zero state, each character predicted from the ones
   *  before it (the first has no prediction), as bard_sdk's Model.score. */
  async score(text, options = {}) {
    const ids = this.encode(text, options);
    const {vocabSize} = this._contract;
    let state = this.zeroState();
    let total = 0;
    for (let start = 0; start < ids.length - 1; start += SCORE_CHUNK) {
      const chunk = ids.slice(start, start + SCORE_CHUNK + 1);
      const out = await this._run(this._tokens(chunk.slice(0, -1)), state);
      state = out.state;
      for (let t = 0; t < chunk.length - 1; t++) {
        total -= logSoftmax(out.logits, t * vocabSize, vocabSize)[chunk[t + 1]];
      }
    }
    const characters = Math.max(ids.length - 1, 0);
    const natsPerChar = characters ? total / characters : NaN;
    return {totalNats: total, characters, natsPerChar, bitsPerChar: natsPerChar / Math.LN2};
  }

  _settings(options) {
    checkKeys(options, GENERATE_OPTIONS);
    const {vocabSize} = this._contract;
    const maxNewChars = integerOption(options.maxNewChars ?? 200, "maxNewChars", 0, MAX_NEW_CHARS);
    const temperature = numberOption(options.temperature ?? 1, "temperature", (t) => t >= 0, ">= 0");
    const topK = options.topK == null ? null
      : integerOption(options.topK, "topK", 1, vocabSize);
    const topP = options.topP == null ? null
      : numberOption(options.topP, "topP", (p) => p > 0 && p <= 1, "in (0, 1]");
    const key = seedKey(options.seed);
    const stops = this._stops(options.stop);
    return {maxNewChars, temperature, topK, topP, key, stops,
            greedy: temperature < TEMPERATURE_FLOOR};
  }

  _stops(stop) {
    if (stop === undefined || stop === null) return [];
    const stops = typeof stop === "string" ? [stop] : stop;
    if (!Array.isArray(stops) || stops.some((s) => typeof s !== "string" || s === "")) {
      throw new BardError(`stop must be a non-empty string or a list of them, got ${show(stop)}`,
                          "stop");
    }
    return stops.map((s) => {
      const unknown = Array.from(s).filter((ch) => !this._contract.index.has(ch));
      if (unknown.length) {
        throw new BardError(`stop string ${show(s)} can never occur: ${show(unknown[0])} is not ` +
                            "in the model's vocabulary", "stop");
      }
      return this.encode(s);
    });
  }
}

/**
 * One text continued across calls. Its state (h, c and the next character's logits) is never
 * changed in place, so `fork()` is free and a Step can branch from the state before it.
 */
export class Session {
  constructor(model, state, logits, length) {
    this.model = model;
    this.state = state;
    this.logits = logits; // Float32Array of the next character's scores; null until fed
    this.length = length; // characters fed or generated so far
  }

  /** Advance over `text`; returns each character's surprisal in nats (NaN for the first
   *  character of a session, which nothing predicts). */
  async feed(text, options = {}) {
    return this._feedIds(this.model.encode(text, options));
  }

  async _feedIds(ids) {
    const {vocabSize} = this.model._contract;
    const surprisal = new Float64Array(ids.length);
    for (let start = 0; start < ids.length; start += PREFILL_CHUNK) {
      const chunk = ids.slice(start, start + PREFILL_CHUNK);
      const out = await this.model._run(this.model._tokens(chunk), this.state);
      for (let t = 0; t < chunk.length; t++) {
        const before = t === 0 ? this.logits : out.logits.subarray((t - 1) * vocabSize,
                                                                   t * vocabSize);
        surprisal[start + t] = before ? -logSoftmax(before, 0, vocabSize)[chunk[t]] : NaN;
      }
      this.state = out.state;
      this.logits = out.logits.slice((chunk.length - 1) * vocabSize, chunk.length * vocabSize);
    }
    this.length += ids.length;
    return surprisal;
  }

  /** An independent copy: both go on from here without affecting each other. */
  fork() {
    return new Session(this.model, this.state, this.logits, this.length);
  }

  /** The next character's probabilities (softmax of the logits), by id. */
  probabilities() {
    if (this.logits === null) throw new BardError("nothing has been fed yet");
    return logSoftmax(this.logits, 0, this.logits.length).map(Math.exp);
  }

  /** The `k` most likely next characters: [{char, id, probability}], most likely first. */
  top(k = 10) {
    return topOf(this.probabilities(), this.model.vocabulary, k);
  }

  async generate(maxNewChars = 200, options = {}) {
    let text = "";
    for await (const step of this.stream(maxNewChars, options)) text += step.char;
    return text;
  }

  /** Continue the text one Step per character; what is made becomes part of the session. */
  async *stream(maxNewChars = 200, options = {}) {
    yield* this._steps(this.model._settings({...options, maxNewChars}));
  }

  async *_steps(settings) {
    if (this.logits === null) await this._feedIds([this.model._emptyPromptId]);
    const tokens = new BigInt64Array(1);
    const tensor = new this.model.ort.Tensor("int64", tokens, [1, 1]);
    const made = [];
    for (let step = 0; step < settings.maxNewChars; step++) {
      const before = this.fork();
      const id = sample(this.logits, settings, settings.greedy ? 0 : uniform(settings.key, step));
      const logp = logSoftmax(this.logits, 0, this.logits.length)[id];
      tokens[0] = BigInt(id);
      const out = await this.model._run(tensor, this.state);
      this.state = out.state;
      this.logits = out.logits;
      this.length++;
      made.push(id);
      yield new Step(before, id, logp);
      if (settings.stops.some((s) => endsWith(made, s))) return;
    }
  }
}

function endsWith(ids, tail) {
  if (tail.length > ids.length) return false;
  const offset = ids.length - tail.length;
  return tail.every((id, i) => ids[offset + i] === id);
}

function topOf(probabilities, vocabulary, k) {
  return Array.from(probabilities.keys())
    .sort((a, b) => probabilities[b] - probabilities[a])
    .slice(0, k)
    .map((id) => ({char: vocabulary[id], id, probability: probabilities[id]}));
}

/** One generated character: what it is, how surprising, what else the model weighed there. */
export class Step {
  constructor(before, id, logProbability) {
    this._before = before; // the session just before this character
    this.id = id;
    this.char = before.model.vocabulary[id];
    this.probability = Math.exp(logProbability);
    this.surprisal = -logProbability; // nats
  }

  /** The `k` most likely characters at this position (the one chosen among them or not). */
  alternatives(k = 10) {
    return this._before.top(k);
  }

  /** The Step that writing `char` at this position would have been. */
  with(char) {
    const id = this._before.model._contract.index.get(char);
    if (id === undefined) {
      throw new BardError(`${show(char)} is not a character of the model's vocabulary`, "char");
    }
    return new Step(this._before, id, logSoftmax(this._before.logits, 0,
                                                 this._before.logits.length)[id]);
  }

  /** A new session that wrote `char` here instead (the state forked before this character). */
  async branch(char) {
    const session = this._before.fork();
    await session.feed(char);
    return session;
  }
}
