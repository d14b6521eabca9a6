// room.js: the writing room. Text streams in, each character coloured by its surprisal
// (-log p); tap one to see what else the model weighed there, pick one to go on from it.
// The same page runs the model in the browser (a `bard web` site) or talks to `bard serve`
// (bard-site.json says which). Text from outside only ever reaches the page as textContent.

import { load } from "./bard.js";

const $ = (id) => document.getElementById(id);
const SURPRISAL_FULL = 6; // nats at which the colour is strongest (p = 0.25%)
const SHOWN = {"\n": "↵", " ": "␣", "\t": "⇥"};

let backend = null;
let pieces = []; // the generated characters: {char, surprisal, step}
let run = 0; // the current generation; a newer one (or Stop) makes older loops end
let settings = null; // the settings of the last generation, reused by a branch

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function glyph(ch) {
  return SHOWN[ch] ?? ch;
}

// ------------------------------------------------------------------ backends

/** The model in this browser, through bard.js: probabilities for every character. */
class LocalBackend {
  constructor(model) {
    this.model = model;
    this.name = model.manifest.name;
    const threads = model.threads ? `, ${model.threads} thread${model.threads > 1 ? "s" : ""}` : "";
    this.where = `in your browser (onnxruntime-web, ${model.backend.toUpperCase()}${threads})`;
  }

  async *stream(prompt, options, onPrompt) {
    const session = await this.model.session("");
    onPrompt(await session.feed(prompt));
    yield* session.stream(options.maxNewChars, this._sampling(options));
  }

  async *continueFrom(step, char, options) {
    const session = await step.branch(char);
    yield* session.stream(options.maxNewChars, this._sampling(options));
  }

  _sampling(options) {
    const out = {temperature: options.temperature};
    if (options.seed !== null) out.seed = options.seed;
    return out;
  }
}

const API_KEY_ITEM = "bard-serve-api-key";

// Alternatives the server reports per character (its `logprobs`; bard serve allows up to 20).
const SERVER_ALTERNATIVES = 10;

/** One character the server wrote: its probability under the model and the alternatives the
 *  server reported there (the `logprobs` likeliest and the one written). */
class ServerStep {
  constructor(context, char, logProbability, top) {
    this.context = context; // the text before this character (prompt and what came before)
    this.char = char;
    this.probability = Math.exp(logProbability);
    this.surprisal = -logProbability; // nats
    this._top = top; // {char: log-probability}
  }

  alternatives(k = 10) {
    return Object.entries(this._top).sort((a, b) => b[1] - a[1]).slice(0, k)
      .map(([char, logProbability]) => ({char, probability: Math.exp(logProbability)}));
  }

  with(char) {
    return new ServerStep(this.context, char, this._top[char], this._top);
  }
}

/** `bard serve` over its OpenAI API: the text and, from `logprobs` and `echo`, each
 *  character's probability and the alternatives (the server is stateless: a branch sends the
 *  text up to the chosen character as a new prompt). */
class ServerBackend {
  constructor(config) {
    this.name = config.model;
    this.url = config.completions;
    this.where = "on the server (bard serve)";
    this.controller = null;
  }

  async *stream(prompt, options, onPrompt) {
    onPrompt(null);
    yield* this._complete(prompt, true, options, onPrompt);
  }

  async *continueFrom(step, char, options) {
    yield* this._complete(step.context + char, false, options, null);
  }

  async *_complete(prompt, echo, options, onPrompt) {
    const body = {model: this.name, prompt, max_tokens: options.maxNewChars,
                  temperature: options.temperature, stream: true,
                  logprobs: SERVER_ALTERNATIVES, echo};
    if (options.seed !== null) body.seed = options.seed;
    this.controller = new AbortController();
    const send = (key) => fetch(this.url, {
      method: "POST", body: JSON.stringify(body), signal: this.controller.signal,
      headers: key ? {"Content-Type": "application/json", "Authorization": `Bearer ${key}`}
                   : {"Content-Type": "application/json"}});
    let key = sessionStorage.getItem(API_KEY_ITEM);
    let response = await send(key);
    if (response.status === 401) {  // bard serve --api-key: ask once, keep it for the tab
      key = window.prompt("This server needs an API key (bard serve --api-key):");
      if (key) {
        sessionStorage.setItem(API_KEY_ITEM, key);
        response = await send(key);
      }
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error((problem.error && problem.error.message) || response.statusText);
    }
    yield* this._steps(response.body.getReader(), prompt, echo ? onPrompt : null);
  }

  /** The characters of the event stream as steps. With `echo`, the first characters are the
   *  prompt's: their surprisals go to `onPrompt` once all of them have come. */
  async *_steps(reader, prompt, onPrompt) {
    const echoed = onPrompt ? Array.from(prompt).length : 0;
    const promptSurprisals = [];
    let context = prompt;
    for await (const entry of this._entries(reader)) {
      if (promptSurprisals.length < echoed) {
        promptSurprisals.push(entry.logprob === null ? NaN : -entry.logprob);
        if (promptSurprisals.length === echoed) onPrompt(promptSurprisals);
        continue;
      }
      yield new ServerStep(context, entry.char, entry.logprob, entry.top);
      context += entry.char;
    }
  }

  /** {char, logprob, top} per character of the server's `data:` events, in order. */
  async *_entries(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
        const chunk = JSON.parse(event.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        for (const c of chunk.choices) {
          const lp = c.logprobs;
          if (!lp) continue;
          for (let i = 0; i < lp.tokens.length; i++) {
            yield {char: lp.tokens[i], logprob: lp.token_logprobs[i], top: lp.top_logprobs[i] ?? {}};
          }
        }
      }
    }
  }

  stop() {
    if (this.controller) this.controller.abort();
  }
}

// ------------------------------------------------------------------ drawing

function charSpan(char, surprisal, index) {
  const span = document.createElement("span");
  span.className = "ch";
  span.textContent = char;
  if (surprisal !== null && !Number.isNaN(surprisal)) {
    span.dataset.surprisal = String(surprisal);
    span.style.setProperty("--s", Math.min(surprisal / SURPRISAL_FULL, 1).toFixed(3));
    span.title = `p = ${Math.exp(-surprisal).toPrecision(3)} · ${surprisal.toFixed(2)} nats`;
  }
  if (index !== null) {
    span.dataset.i = String(index);
    span.tabIndex = 0;
    span.setAttribute("role", "button");
  }
  return span;
}

function drawPrompt(prompt, surprisals) {
  const shown = $("shown-prompt");
  shown.textContent = "";
  if (surprisals === null) {
    shown.textContent = prompt;
    return;
  }
  Array.from(prompt).forEach((ch, i) => shown.append(charSpan(ch, surprisals[i] ?? null, null)));
}

function addPiece(piece) {
  pieces.push(piece);
  $("generated").append(charSpan(piece.char, piece.surprisal, pieces.length - 1));
}

function truncate(length) {
  pieces = pieces.slice(0, length);
  const spans = $("generated").children;
  while (spans.length > length) spans[spans.length - 1].remove();
}

// ------------------------------------------------------------------ generating

function readSettings() {
  const length = Number($("length").value);
  const seedText = $("seed").value.trim();
  return {maxNewChars: Number.isInteger(length) && length > 0 ? length : 300,
          temperature: Number($("temperature").value),
          seed: seedText === "" ? null : Number(seedText)};
}

async function consume(steps, mine, label) {
  const started = performance.now();
  let count = 0;
  $("generate").disabled = true;
  $("stop").disabled = false;
  setStatus(`${label}…`);
  try {
    for await (const step of steps) {
      if (mine !== run) break;
      addPiece({char: step.char, surprisal: step.surprisal ?? null, step});
      count++;
    }
    if (mine !== run) {
      if (backend.stop) backend.stop();
      return;
    }
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? Math.round(count / seconds) : 0;
    setStatus(`done: ${count} characters in ${seconds.toFixed(2)} s (${rate} chars/s)`);
  } catch (err) {
    if (mine === run) setStatus(`error: ${err.message}`, true);
    else setStatus(`stopped after ${count} characters`);
  } finally {
    if (mine === run) {
      $("generate").disabled = false;
      $("stop").disabled = true;
    }
  }
}

async function generate() {
  const mine = ++run;
  closeAlternatives();
  settings = readSettings();
  const prompt = $("prompt").value;
  truncate(0);
  drawPrompt(prompt, null);
  await consume(backend.stream(prompt, settings, (s) => drawPrompt(prompt, s)), mine, "generating");
}

function stop() {
  const count = pieces.length;
  run++;
  if (backend.stop) backend.stop();
  $("generate").disabled = false;
  $("stop").disabled = true;
  setStatus(`stopped after ${count} characters`);
}

// ------------------------------------------------------------------ alternatives and branches

function closeAlternatives() {
  $("alternatives").hidden = true;
  for (const span of document.querySelectorAll("#generated .picked")) span.classList.remove("picked");
}

function showAlternatives(index) {
  const piece = pieces[index];
  if (!piece || !piece.step) return;
  closeAlternatives();
  $("generated").children[index].classList.add("picked");
  const alternatives = piece.step.alternatives(10);
  if (!alternatives.some((a) => a.char === piece.char)) {
    alternatives.push({char: piece.char, probability: piece.step.probability});
  }
  $("alternatives-title").textContent =
    `Character ${index + 1}: the model wrote “${glyph(piece.char)}”`;
  $("alternatives-note").textContent =
    `p = ${piece.step.probability.toPrecision(3)}, surprisal ${piece.surprisal.toFixed(2)} nats. ` +
    "Pick another to go on from there.";
  const list = $("alternative-list");
  list.textContent = "";
  for (const alternative of alternatives) {
    const button = document.createElement("button");
    button.dataset.char = alternative.char;
    button.dataset.probability = String(alternative.probability);
    if (alternative.char === piece.char) button.classList.add("chosen");
    const shown = document.createElement("span");
    shown.className = "glyph";
    shown.textContent = glyph(alternative.char);
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("i");
    fill.style.width = `${(alternative.probability * 100).toFixed(1)}%`;
    bar.append(fill);
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = `${(alternative.probability * 100).toFixed(1)}%`;
    button.append(shown, bar, p);
    button.addEventListener("click", () => branch(index, alternative.char));
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
  $("alternatives").hidden = false;
}

async function branch(index, char) {
  const mine = ++run;
  const step = pieces[index].step;
  closeAlternatives();
  const chosen = step.with(char);
  truncate(index);
  addPiece({char, surprisal: chosen.surprisal, step: chosen});
  $("generated").children[index].classList.add("branched");
  const rest = Math.max(settings.maxNewChars - index - 1, 0);
  await consume(backend.continueFrom(step, char, {...settings, maxNewChars: rest}), mine,
                "branching");
}

// ------------------------------------------------------------------ start

async function connect() {
  const response = await fetch("bard-site.json");
  if (!response.ok) throw new Error(`no bard-site.json beside this page (HTTP ${response.status})`);
  const config = await response.json();
  if (config.mode === "server") return new ServerBackend(config);
  const params = new URLSearchParams(location.search);
  const options = {};
  if (params.has("backend")) options.backend = params.get("backend");
  if (params.has("threads")) options.threads = Number(params.get("threads"));
  const model = await load(options);
  window.bard = model; // the JavaScript API, for the console and for sketches
  return new LocalBackend(model);
}

async function start() {
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = $("temperature").value;
  });
  $("surprisal").addEventListener("change", () => {
    $("output").classList.toggle("colour", $("surprisal").checked);
  });
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", stop);
  $("alternatives-close").addEventListener("click", closeAlternatives);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) generate();
  });
  const onChar = (e) => {
    const span = e.target.closest("#generated .ch[data-i]");
    if (span && (e.type === "click" || e.key === "Enter")) showAlternatives(Number(span.dataset.i));
  };
  $("generated").addEventListener("click", onChar);
  $("generated").addEventListener("keydown", onChar);
  try {
    backend = await connect();
  } catch (err) {
    setStatus(`error: ${err.message}`, true);
    return;
  }
  $("model").textContent = backend.name;
  $("where").textContent = backend.where;
  $("generate").disabled = false;
  document.body.dataset.ready = "true";
  setStatus("ready");
}

start();
