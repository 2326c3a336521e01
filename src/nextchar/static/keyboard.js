// The keyboard page: suggestions from /v1/predict and /v1/complete, on-screen keys from /v1/keys, and three
// ways to select (touch or click, dwell, one-switch scanning). The user's text never leaves the box on a
// failure and is kept in localStorage until it is cleared.
"use strict";

const $ = (id) => document.getElementById(id);
const text = $("text");
const board = $("board");
const wordButtons = [...document.querySelectorAll("#words .sugg")];
const charButtons = [...document.querySelectorAll("#chars .sugg")];
const MAX_PREFIX = 16000; // UTF-16 units of context sent: well under the server's body limit in any script
const NAMES = { " ": "space", "\u00a0": "no-break space", "\u200c": "ZWNJ", "\u200d": "ZWJ", "\t": "tab", "\u00ad": "SHY" };
const REFRACTORY_MS = 300; // after a dwell selection no other target starts filling for this long
const RTL = new Set(["Hebrew", "Arabic", "Syriac", "Thaana", "Nko", "Samaritan", "Mandaic", "Adlam"]);
const NO_SPACES = new Set(["Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar", "Tibetan"]);
// Which script a language is written in, for the languages nextchar's models are trained on and a few more;
// it narrows the language guess for speech when neither the server nor the user names one.
const LANG_SCRIPT = {
  ar: "Arabic", bn: "Bengali", cs: "Latin", cy: "Latin", da: "Latin", de: "Latin", el: "Greek", en: "Latin",
  es: "Latin", eu: "Latin", fa: "Arabic", fi: "Latin", fr: "Latin", he: "Hebrew", hi: "Devanagari", hu: "Latin",
  it: "Latin", ja: "Han", ko: "Hangul", mn: "Cyrillic", nl: "Latin", pl: "Latin", pt: "Latin", ru: "Cyrillic",
  sq: "Latin", sv: "Latin", sw: "Latin", th: "Thai", tr: "Latin", uk: "Cyrillic", ur: "Arabic", zh: "Han",
};
const FIRST_LANG = { Latin: "en", Cyrillic: "ru", Arabic: "ar", Han: "zh" }; // when nothing else decides
const DEFAULTS = {
  access: "touch", dwellMs: 800, scanMs: 1000, scanKey: "Space", theme: "standard", size: "normal",
  order: "freq", lang: "auto", script: "auto", adapt: true, probs: true, digits: false, noOsk: false,
};
const LIMITS = { dwellMs: [300, 2000], scanMs: [300, 5000] };

// ------------------------------------------------------------------------------------------ storage

function recall(key, storage = localStorage) {
  try {
    const v = storage.getItem(key);
    return v === null ? null : JSON.parse(v);
  } catch (e) { return null; } // storage disabled or a broken value: start fresh
}

function keep(key, value, storage = localStorage) {
  try {
    if (value === null) storage.removeItem(key); else storage.setItem(key, JSON.stringify(value));
    return true;
  } catch (e) { return false; } // full or disabled
}

const settings = Object.assign({}, DEFAULTS, recall("nextchar-settings") || {});
for (const [k, [lo, hi]] of Object.entries(LIMITS)) settings[k] = Math.min(hi, Math.max(lo, Number(settings[k]) || DEFAULTS[k]));

function newSessionId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b); // works on plain http too (crypto.randomUUID needs a secure context)
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// one session per tab: the server adapts to what this tab's user writes
let session = recall("nextchar-session", sessionStorage) || newSessionId();
keep("nextchar-session", session, sessionStorage);

// ------------------------------------------------------------------------------------------ status

let errorShown = false; // an error stays until the user's next action (or, for a lost server, until it is back)
let offline = false;

function setStatus(msg, isError = false) {
  $("status").textContent = msg;
  $("status").classList.toggle("error", isError);
  errorShown = isError;
}

// Every user action calls this first: it clears an error the user has now seen and acted after.
function userAction() {
  if (errorShown && !offline) setStatus("");
}

const fmt = (n) => n.toLocaleString();

// ------------------------------------------------------------------------------------------ server

let config = { maxText: 20000, maxBody: 65536, scripts: [], languages: [] };
let completeMissing = false; // the server has no /v1/complete (an older nextchar): no word row

async function request(path, body, signal) {
  const r = await fetch(path, body === undefined ? { signal } : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  let data = {};
  try { data = await r.json(); } catch (e) { /* a proxy's HTML error page */ }
  if (!r.ok) {
    const err = new Error(data.error || `${r.status} ${r.statusText}`);
    err.status = r.status;
    throw err;
  }
  return data;
}

// fetch() rejects with a TypeError when the server cannot be reached at all
const unreachable = (e) => e instanceof TypeError;

let retryTimer = 0;
let retryMs = 1000;

function lost() {
  offline = true;
  setStatus("Cannot reach the server: suggestions are paused; your text stays here. Retrying…", true);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => { if (!config.scripts.length) loadKeys(); predict(true); }, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

function found() {
  retryMs = 1000;
  if (offline) {
    offline = false;
    setStatus("Connected again.");
  }
}

// ------------------------------------------------------------------------------------------ scripts and language

const scriptTests = new Map(); // script name -> RegExp of its letters (Unicode Script property)
function scriptTest(name) {
  if (!scriptTests.has(name)) {
    let re = null;
    try { re = new RegExp(`\\p{Script=${name}}`, "u"); } catch (e) { /* a name the browser does not know */ }
    scriptTests.set(name, re);
  }
  return scriptTests.get(name);
}

const letterScript = new Map(); // every key's character (both cases) -> its script, from /v1/keys

function scriptOfChar(ch) {
  const s = letterScript.get(ch);
  if (s) return s;
  if (!/[\p{L}\p{M}]/u.test(ch)) return null;
  for (const k of config.scripts) if (scriptTest(k.script)?.test(ch)) return k.script;
  return null;
}

// The script most of the last letters before the cursor are in; null when there are none.
function detectScript(before) {
  const counts = new Map();
  let seen = 0;
  const tail = Array.from(before.slice(-200));
  for (let i = tail.length - 1; i >= 0 && seen < 40; i--) {
    const s = scriptOfChar(tail[i]);
    if (s) { counts.set(s, (counts.get(s) || 0) + 1); seen++; }
  }
  let best = null;
  for (const [s, n] of counts) if (!best || n > counts.get(best)) best = s;
  return best;
}

let detected = null; // the text's script, updated on every change
let serverLanguage = null; // the predict answer's optional `language`, when the model reports one

function defaultScript() {
  const names = config.scripts.map((k) => k.script);
  for (const l of navigator.languages || []) {
    const s = LANG_SCRIPT[l.split("-")[0].toLowerCase()];
    if (names.includes(s)) return s;
  }
  return names[0] || "Latin";
}

function currentScript() {
  const names = config.scripts.map((k) => k.script);
  if (settings.script !== "auto" && names.includes(settings.script)) return settings.script;
  return detected || defaultScript();
}

// The language of `language` in a predict answer: a code, {code: prob}, or [{language, prob}], best first.
function parseLanguage(x) {
  if (typeof x === "string") return x || null;
  if (Array.isArray(x)) return x.length ? (x[0].language || x[0].lang || null) : null;
  if (x && typeof x === "object") {
    let best = null;
    for (const [k, p] of Object.entries(x)) if (best === null || p > x[best]) best = k;
    return best;
  }
  return null;
}

// BCP 47 tag for speech and capitals: the user's choice, else the server's, else a guess from the script.
function languageTag() {
  if (settings.lang !== "auto") return settings.lang;
  if (serverLanguage) return serverLanguage;
  const script = detected || currentScript();
  const known = config.languages.length ? config.languages : Object.keys(LANG_SCRIPT);
  const langs = known.filter((l) => LANG_SCRIPT[l] === script);
  for (const l of navigator.languages || []) {
    const base = l.split("-")[0].toLowerCase();
    if (langs.includes(base)) return l;
  }
  const tail = text.value.slice(-400);
  if (langs.includes("mn") && /[өүӨҮ]/.test(tail)) return "mn";
  if (langs.includes("fa") && (/[پچژگ]/.test(tail) || !langs.includes("ar"))) return "fa";
  if (langs.includes(FIRST_LANG[script])) return FIRST_LANG[script];
  return langs[0] || (navigator.language || "en");
}

function upper(ch) {
  let u = ch;
  try { u = ch.toLocaleUpperCase(languageTag()); } catch (e) { u = ch.toUpperCase(); }
  return Array.from(u).length === 1 ? u : ch; // ß stays ß rather than becoming two letters
}

// ------------------------------------------------------------------------------------------ editing and undo

const undoStack = [];
const redoStack = [];
let lastTyped = 0; // time of the last typed letter, to merge a typed word into one undo step

function snapshot() {
  return { v: text.value, a: text.selectionStart, b: text.selectionEnd };
}

function pushUndo() {
  undoStack.push(snapshot());
  if (undoStack.length > 100) undoStack.shift();
  redoStack.length = 0;
}

function restore(s) {
  text.value = s.v;
  text.setSelectionRange(s.a, s.b);
  changed();
}

function undo() {
  if (!undoStack.length) { setStatus("Nothing to undo."); return; }
  redoStack.push(snapshot());
  restore(undoStack.pop());
}

function redo() {
  if (!redoStack.length) return;
  undoStack.push(snapshot());
  restore(redoStack.pop());
}

// Replace the selection (or insert at the cursor) as one undo step.
function replaceSelection(s) {
  pushUndo();
  const a = text.selectionStart;
  text.setRangeText(s, a, text.selectionEnd, "end");
  changed();
}

function backspace() {
  let a = text.selectionStart;
  const b = text.selectionEnd;
  if (a === b) {
    if (a === 0) return;
    // one code point: a combining mark or an Indic vowel sign goes alone, a surrogate pair together
    a -= /[\uDC00-\uDFFF]/.test(text.value[a - 1]) && /[\uD800-\uDBFF]/.test(text.value[a - 2] || "") ? 2 : 1;
  }
  pushUndo();
  text.setRangeText("", a, b, "end");
  changed();
}

function setText(v) {
  pushUndo();
  text.value = v;
  text.setSelectionRange(v.length, v.length);
  changed();
}

let draftTimer = 0;
let draftWarned = false;

function saveDraft() {
  clearTimeout(draftTimer);
  // this tab's copy survives a reload; the shared one survives closing the tab (the last tab written wins)
  const d = text.value ? { v: text.value, a: text.selectionStart } : null;
  const ok = keep("nextchar-draft", d, sessionStorage) & keep("nextchar-draft", d);
  if (!ok && !draftWarned) {
    draftWarned = true;
    setStatus("This browser cannot keep a copy of your text (storage full or off): it lives only in this page.", true);
  }
}

// After any change of the text or the cursor: keep a copy, follow the script, ask for suggestions.
function changed() {
  autoSpace = -1;
  clearTimeout(draftTimer);
  draftTimer = setTimeout(saveDraft, 200);
  followScript();
  predict();
}

// ------------------------------------------------------------------------------------------ suggestions

let seq = 0; // the newest request; older answers are dropped, so fast typing never shows stale suggestions
let inflight = null;
let asked = null;
let shownChars = [];
let shownWords = [];
let wordsFor = null; // the prefix the shown completions continue
window.nextcharLatencies = []; // ms per keystroke (request to both rows shown), for benchmarks/page_latency.py

function label(ch) {
  if (ch === " ") return "␣";
  if (NAMES[ch]) return NAMES[ch];
  if (/\p{M}/u.test(ch)) return "\u25cc" + ch; // a combining mark needs a base to be seen
  if (/[\p{C}\p{Z}]/u.test(ch)) return "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return ch;
}

// Show a character on a button; one shown by a stand-in gets its name for screen readers (the visible text
// stays part of the name: no aria-label that would differ from what is on the screen).
function face(el, ch) {
  const shown = label(ch);
  el.replaceChildren();
  if (shown === ch || !ch) {
    el.textContent = ch;
    return;
  }
  const look = document.createElement("span");
  look.setAttribute("aria-hidden", "true");
  look.textContent = shown;
  const name = document.createElement("span");
  name.className = "visually-hidden";
  name.textContent = NAMES[ch] || (/\p{M}/u.test(ch) ? `mark ${ch}` : shown);
  el.append(look, name);
}

function percent(p) {
  return (p * 100).toFixed(p < 0.1 ? 1 : 0) + "%";
}

function prefixNow() {
  let p = text.value.slice(0, text.selectionStart).slice(-MAX_PREFIX);
  if (/^[\uDC00-\uDFFF]/.test(p)) p = p.slice(1); // never send half a surrogate pair
  return p;
}

// The part of the current word before the cursor (what a completion continues).
function wordSoFar(prefix) {
  return prefix.match(/[\p{L}\p{M}\p{N}\u200c\u200d]*$/u)[0]; // nextchar.complete's word characters
}

function renderChars(preds) {
  shownChars = preds;
  charButtons.forEach((b, i) => {
    const s = preds[i];
    b.disabled = !s;
    face(b.querySelector(".ch"), s ? s.char : "");
    b.querySelector(".prob").textContent = s ? percent(s.prob) : "";
    b.dataset.char = s ? s.char : "";
    b.dir = "auto";
  });
  redwell(charButtons);
}

function renderWords(items, prefix) {
  shownWords = items;
  wordsFor = prefix;
  const have = wordSoFar(prefix);
  wordButtons.forEach((b, i) => {
    const s = items[i];
    b.disabled = !s;
    const txt = b.querySelector(".txt");
    txt.replaceChildren();
    if (s) {
      const h = document.createElement("span");
      h.className = "have";
      h.textContent = have;
      const add = document.createElement("b");
      add.textContent = s.text;
      txt.append(h, add);
    }
    b.querySelector(".prob").textContent = s ? percent(s.prob) : "";
    b.dataset.text = s ? s.text : "";
    b.dir = "auto";
    b.title = s ? `Finish the word as ${have + s.text}` : "";
  });
  redwell(wordButtons);
}

async function completions(body, signal) {
  if (completeMissing) return { completions: [] };
  try {
    return await request("v1/complete", body, signal);
  } catch (e) {
    if (e.status === 404 || e.status === 405) { // a server without word completion: characters only
      completeMissing = true;
      $("words").hidden = true;
      return { completions: [] };
    }
    throw e;
  }
}

async function predict(force = false) {
  const prefix = prefixNow();
  const key = `${settings.adapt}\u0000${prefix}`;
  if (!force && asked === key) return;
  asked = key;
  const my = ++seq;
  if (inflight) inflight.abort();
  inflight = new AbortController();
  board.dataset.ready = "false";
  const body = { prefix, k: 3 };
  if (settings.adapt) body.session = session;
  const t0 = performance.now();
  const chars = request("v1/predict", body, inflight.signal).then((d) => {
    if (my === seq) renderChars(d.predictions);
    return d;
  });
  const words = completions(body, inflight.signal).then((d) => {
    if (my === seq) renderWords(d.completions || [], prefix);
  });
  try {
    const [d] = await Promise.all([chars, words]);
    if (my !== seq) return;
    const ms = performance.now() - t0;
    $("latency").textContent = `${ms.toFixed(1)} ms`;
    window.nextcharLatencies.push(ms);
    if (window.nextcharLatencies.length > 5000) window.nextcharLatencies.shift();
    $("model").textContent = d.model + (d.adapted ? " (adapted)" : "");
    const lang = parseLanguage(d.language);
    if (lang !== serverLanguage) {
      serverLanguage = lang;
      applyLanguage();
    }
    board.dataset.prefix = prefix; // which text the suggestions are for (tests wait on it)
    board.dataset.ready = "true";
    found();
  } catch (e) {
    if (e.name === "AbortError" || my !== seq) return;
    asked = null; // the next keystroke or cursor move tries again
    if (unreachable(e)) lost();
    else setStatus(`Suggestions failed: ${e.message}. Your text is unchanged.`, true);
  }
}

// A character suggestion types what its button shows, even while the next answer is on its way.
function acceptChar(slot) {
  const s = shownChars[slot];
  if (s) typeAfterWord(s.char);
}

// A word suggestion gives the word its button shows: if letters were typed since it was computed, only the
// rest of it (and nothing when the typing went another way).
function acceptWord(slot) {
  const s = shownWords[slot];
  const now = prefixNow();
  if (!s || wordsFor === null || !now.startsWith(wordsFor)) return;
  const typed = now.slice(wordsFor.length);
  if (!s.text.startsWith(typed) || /\s/.test(typed)) return;
  let t = s.text.slice(typed.length);
  // one selection finishes the word: a space follows unless the completion ends it already, the next
  // character is a space, or the script writes no spaces between words
  const next = text.value.charAt(text.selectionEnd);
  const spaced = !/[\s\p{P}]$/u.test(s.text) && !/\s/.test(next) && !NO_SPACES.has(currentScript());
  if (spaced) t += " ";
  if (t) replaceSelection(t);
  autoSpace = spaced ? text.selectionStart : -1;
}

// The space a completion added, while the cursor is still right after it: a punctuation mark or a line break
// typed next takes its place ("hello" + "," gives "hello,"), as nextchar.complete's keystroke count assumes.
let autoSpace = -1;

function typeAfterWord(s) {
  const at = autoSpace;
  autoSpace = -1;
  if (at > 0 && at === text.selectionStart && at === text.selectionEnd && text.value[at - 1] === " " &&
      /^(\p{Po}|\p{Pe}|\p{Pf}|\n)$/u.test(s)) {
    text.setSelectionRange(at - 1, at);
  }
  replaceSelection(s);
}

// ------------------------------------------------------------------------------------------ keys

let pane = "letters";
let shift = 0; // 0 off, 1 for the next letter, 2 locked
let keysShown = ""; // what #keys shows now, so an unchanged layout is not rebuilt (dwell and scan keep their place)

function scriptKeys() {
  const s = currentScript();
  return config.scripts.find((k) => k.script === s) || config.scripts[0] || null;
}

function hasCase(k) {
  return k && k.letters.some((c) => upper(c) !== c);
}

function renderKeys() {
  const k = scriptKeys();
  const lang = languageTag();
  let chars = [];
  if (k) {
    if (pane === "letters") chars = sortKeys(k.letters, lang).concat(k.punctuation);
    else if (pane === "more") chars = sortKeys(k.more, lang);
    else chars = k.symbols;
  }
  const cased = hasCase(k);
  $("shift").disabled = !cased || pane === "symbols";
  const up = shift > 0 && cased && pane !== "symbols";
  const sig = [k && k.script, pane, up, lang, chars.join("")].join("\u0001");
  const rtl = k && RTL.has(k.script);
  board.dir = rtl ? "rtl" : "ltr";
  $("keys").setAttribute("aria-label", pane === "symbols" ? "Digits and punctuation" : `${k ? k.script : ""} letters`);
  if (sig === keysShown) return;
  keysShown = sig;
  const box = $("keys");
  box.replaceChildren();
  chars.forEach((c, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "key";
    const ch = up && /\p{L}/u.test(c) ? upper(c) : c;
    b.dataset.char = ch;
    face(b, ch);
    if (Array.from(label(ch)).length > 2) b.classList.add("small");
    b.tabIndex = i === 0 ? 0 : -1; // one tab stop; arrow keys move inside (roving tabindex)
    box.append(b);
  });
  $("more-pane").disabled = !(k && k.more.length);
  // the letters' button shows the script's first three letters in its alphabet ("abc", "αβγ", "אבג")
  const abc = k ? [...k.letters.filter((c) => /\p{L}/u.test(c))].sort(new Intl.Collator(lang).compare).slice(0, 3).join("") : "abc";
  document.querySelector('[data-pane="letters"]').textContent = abc || "abc";
  document.querySelectorAll(".pane").forEach((p) => p.setAttribute("aria-pressed", String(p.dataset.pane === pane)));
  $("shift").setAttribute("aria-pressed", String(shift > 0));
  $("shift").lastChild.textContent = shift === 2 ? " Caps" : " Shift";
  $("script").textContent = k ? k.script : "–";
  if (settings.script === "auto") $("script").append(Object.assign(document.createElement("small"), { textContent: " (auto)" }));
}

function sortKeys(chars, lang) {
  if (settings.order !== "abc") return chars;
  const coll = new Intl.Collator(lang);
  return [...chars].sort(coll.compare);
}

function followScript() {
  const s = detectScript(text.value.slice(0, text.selectionStart)) || detectScript(text.value);
  if (s !== detected) {
    detected = s;
    applyLanguage();
  }
}

function applyLanguage() {
  text.lang = languageTag();
  renderKeys();
}

function typeKey(ch) {
  typeAfterWord(ch);
  if (shift === 1) {
    shift = 0;
    renderKeys();
  }
}

// ------------------------------------------------------------------------------------------ speech

function speak() {
  const synth = window.speechSynthesis;
  if (!synth || typeof SpeechSynthesisUtterance === "undefined") {
    setStatus("This browser has no speech synthesis.", true);
    return;
  }
  const selected = text.value.slice(text.selectionStart, text.selectionEnd);
  const say = selected || text.value;
  if (!say.trim()) {
    setStatus("Nothing to speak yet.");
    return;
  }
  if (synth.speaking) synth.cancel(); // a second press stops a long text and starts again
  const u = new SpeechSynthesisUtterance(say);
  u.lang = languageTag();
  const base = u.lang.toLowerCase().split("-")[0];
  const voice = synth.getVoices().find((v) => v.lang.toLowerCase().split(/[-_]/)[0] === base);
  if (voice) u.voice = voice;
  u.onerror = (e) => { if (e.error !== "interrupted" && e.error !== "canceled") setStatus(`Speech failed: ${e.error}`, true); };
  synth.speak(u);
}

// ------------------------------------------------------------------------------------------ done and forget

// The last max_text characters (what the server keeps), fewer if the JSON body would pass its size limit.
function fitForServer(t) {
  let cps = Array.from(t);
  if (cps.length > config.maxText) cps = cps.slice(cps.length - config.maxText);
  const enc = new TextEncoder();
  let s = cps.join("");
  while (s && enc.encode(JSON.stringify({ session, text: s })).length > config.maxBody - 64) {
    cps = cps.slice(Math.ceil(cps.length / 10)); // rare: many characters that JSON escapes to six bytes
    s = cps.join("");
  }
  return s;
}

async function done() {
  const all = text.value;
  if (!all) {
    setStatus("Nothing to remember yet.");
    return;
  }
  if (!settings.adapt) {
    setText("");
    setStatus("Cleared (adaptation is off, so nothing was sent). Undo brings the text back.");
    return;
  }
  const sent = fitForServer(all);
  $("done").disabled = true;
  let r;
  try {
    r = await request("v1/session/observe", { session, text: sent });
  } catch (e) {
    setStatus(`Could not remember your text: ${unreachable(e) ? "the server cannot be reached" : e.message}. ` +
              "It is still in the box; try Done again later.", true);
    return;
  } finally {
    $("done").disabled = false;
  }
  const n = Array.from(sent).length;
  const total = Array.from(all).length;
  const what = n < total
    ? `Remembered the last ${fmt(n)} of ${fmt(total)} characters (the server keeps at most ${fmt(config.maxText)})`
    : `Remembered ${fmt(n)} characters`;
  if (text.value === all) {
    setText("");
    setStatus(`${what}; this session remembers ${fmt(r.history_chars)}. The box is cleared: Undo brings the text back.`);
  } else { // typed on while the request was under way: keep everything
    setStatus(`${what}; this session remembers ${fmt(r.history_chars)}. You typed on, so the box was not cleared.`);
  }
}

async function forget() {
  try {
    await request("v1/session/forget", { session });
    setStatus("Forgotten: the server keeps nothing of your writing now.");
  } catch (e) {
    setStatus(`Could not forget: ${unreachable(e) ? "the server cannot be reached" : e.message}. ` +
              "A new session starts anyway; the server drops old ones by itself.", true);
  }
  session = newSessionId();
  keep("nextchar-session", session, sessionStorage);
  predict(true);
}

// ------------------------------------------------------------------------------------------ activation

// One place for what each button does, whether it was clicked, tapped, dwelt on, scanned or pressed.
function activate(b) {
  if (!b || b.disabled) return;
  userAction();
  if (b.classList.contains("word")) acceptWord(Number(b.dataset.slot));
  else if (b.classList.contains("char")) acceptChar(Number(b.dataset.slot));
  else if (b.classList.contains("key")) typeKey(b.dataset.char);
  else if (b.classList.contains("pane")) { pane = b.dataset.pane; renderKeys(); }
  else if (b.dataset.set) { settings[b.dataset.set] = b.dataset.value; applySettings(); }
  else if (b.dataset.toggle) { settings[b.dataset.toggle] = !settings[b.dataset.toggle]; applySettings(); }
  else if (b.dataset.step) {
    const [lo, hi] = LIMITS[b.dataset.step];
    settings[b.dataset.step] = Math.min(hi, Math.max(lo, settings[b.dataset.step] + Number(b.dataset.by)));
    applySettings();
  } else {
    const act = ACTIONS[b.id];
    if (act) act();
  }
}

const ACTIONS = {
  speak,
  space: () => typeKey(" "),
  backspace,
  enter: () => typeAfterWord("\n"),
  undo,
  clear: () => {
    if (!text.value) return;
    setText("");
    setStatus("Cleared: Undo brings the text back.");
  },
  shift: () => { shift = (shift + 1) % 3; renderKeys(); },
  script: () => {
    const names = ["auto", ...config.scripts.map((k) => k.script)];
    settings.script = names[(names.indexOf(settings.script) + 1) % names.length];
    pane = "letters";
    applySettings();
  },
  done,
  forget,
};

document.addEventListener("click", (e) => {
  const b = e.target.closest("button");
  if (b && $("app").contains(b)) activate(b);
});
// Buttons on the keyboard keep the cursor (and a phone's own keyboard) in the text box.
board.addEventListener("mousedown", (e) => { if (e.target.closest("button")) e.preventDefault(); });
$("finish").addEventListener("mousedown", (e) => { if (e.target.closest("button")) e.preventDefault(); });

// ------------------------------------------------------------------------------------------ dwell

const DWELLABLE = "#app button";
const dwell = { hovered: null, el: null, timer: 0, wait: 0, fired: null, until: 0 };

function stopDwell() {
  clearTimeout(dwell.timer);
  clearTimeout(dwell.wait);
  if (dwell.el) dwell.el.classList.remove("dwelling");
  dwell.el = null;
}

// Start filling the hovered target (after the refractory time); a target just selected must be left first.
function armDwell() {
  stopDwell();
  const el = dwell.hovered;
  if (settings.access !== "dwell" || !el || el.disabled || el === dwell.fired) return;
  const wait = dwell.until - performance.now();
  if (wait > 0) {
    dwell.wait = setTimeout(armDwell, wait);
    return;
  }
  dwell.el = el;
  el.style.setProperty("--dwell-ms", `${settings.dwellMs}ms`);
  void el.offsetWidth; // restart the fill animation
  el.classList.add("dwelling");
  dwell.timer = setTimeout(() => {
    el.classList.remove("dwelling");
    dwell.el = null;
    dwell.fired = el;
    dwell.until = performance.now() + REFRACTORY_MS;
    el.classList.add("fired");
    setTimeout(() => el.classList.remove("fired"), 250);
    activate(el);
  }, settings.dwellMs);
}

// New suggestions under a resting pointer: fill again from empty, so the user sees what they will pick.
function redwell(buttons) {
  if (dwell.el && buttons.includes(dwell.el)) armDwell();
}

document.addEventListener("pointerover", (e) => {
  if (e.pointerType === "touch") return; // a finger taps; eye trackers and head mice move a mouse pointer
  const el = e.target.closest ? e.target.closest(DWELLABLE) : null;
  if (el === dwell.hovered) return;
  if (dwell.fired && el !== dwell.fired) dwell.fired = null;
  dwell.hovered = el;
  armDwell();
});
document.addEventListener("pointerout", (e) => {
  if (!e.relatedTarget) { // left the window
    dwell.hovered = null;
    dwell.fired = null;
    stopDwell();
  }
});

// ------------------------------------------------------------------------------------------ scanning

const scan = { level: 0, row: -1, item: -1, loops: 0, timer: 0, rows: [] };

// Rows in scanning order: the suggestions first, then editing, key sets, each visual row of keys, Done.
function scanRows() {
  const enabled = (el) => [...el.querySelectorAll("button")].filter((b) => !b.disabled && b.offsetParent);
  const rows = [enabled($("words")), enabled($("chars")), enabled($("actions")), enabled($("panes"))];
  let top = null;
  for (const k of enabled($("keys"))) {
    if (top === null || Math.abs(k.offsetTop - top) > 4) { rows.push([]); top = k.offsetTop; }
    rows[rows.length - 1].push(k);
  }
  rows.push(enabled($("finish")));
  return rows.filter((r) => r.length);
}

function clearScanMarks() {
  document.querySelectorAll(".scan-row, .scan-item").forEach((el) => el.classList.remove("scan-row", "scan-item"));
}

function showScan() {
  clearScanMarks();
  const row = scan.rows[scan.row];
  if (!row) return;
  if (scan.level === 0) row.forEach((b) => b.classList.add("scan-row"));
  else if (row[scan.item]) row[scan.item].classList.add("scan-item");
}

function scanStep() {
  if (scan.level === 0) {
    scan.rows = scanRows();
    scan.row = (scan.row + 1) % Math.max(scan.rows.length, 1);
  } else {
    const row = scan.rows[scan.row] || [];
    scan.item += 1;
    if (scan.item >= row.length) {
      scan.item = 0;
      scan.loops += 1;
      if (scan.loops >= 2) { // no pick in two passes: back to the rows
        scan.level = 0;
        scan.row = -1;
        scanStep();
        return;
      }
    }
  }
  showScan();
}

function scanRestart() {
  clearInterval(scan.timer);
  scan.timer = setInterval(scanStep, settings.scanMs);
}

function startScan() {
  stopScan();
  scan.level = 0;
  scan.row = -1;
  scanStep();
  scanRestart();
}

function stopScan() {
  clearInterval(scan.timer);
  scan.timer = 0;
  clearScanMarks();
}

function scanSelect() {
  const row = scan.rows[scan.row];
  if (!row || !row.length) return;
  if (scan.level === 0 && row.length > 1) {
    scan.level = 1;
    scan.item = 0;
    scan.loops = 0;
    showScan();
    scanRestart();
    return;
  }
  const b = scan.level === 0 ? row[0] : row[scan.item];
  scan.level = 0;
  scan.row = -1;
  activate(b);
  if (settings.access === "scan") { // the pick may have turned scanning off
    scanStep(); // back to the first row (the suggestions) at once
    scanRestart();
  }
}

// The switch: its key picks, in any element, and never types or presses a focused button.
window.addEventListener("keydown", (e) => {
  if (settings.access !== "scan" || e.code !== settings.scanKey || e.ctrlKey || e.altKey || e.metaKey) return;
  e.preventDefault();
  e.stopPropagation();
  if (!e.repeat) scanSelect();
}, true);
window.addEventListener("keyup", (e) => {
  if (settings.access === "scan" && e.code === settings.scanKey) { e.preventDefault(); e.stopPropagation(); }
}, true);

// ------------------------------------------------------------------------------------------ keyboard use

const SLOT = { Digit1: 0, Digit2: 1, Digit3: 2, Digit4: 3, Digit5: 4, Digit6: 5, Numpad1: 0, Numpad2: 1,
               Numpad3: 2, Numpad4: 3, Numpad5: 4, Numpad6: 5 };
document.addEventListener("keydown", (e) => {
  if (e.isComposing) return;
  const mod = e.ctrlKey || e.metaKey;
  if (mod && !e.altKey && (e.key === "z" || e.key === "Z" || e.key === "y")) { // our undo covers every edit
    e.preventDefault();
    userAction();
    if (e.key === "y" || e.shiftKey) redo(); else undo();
    return;
  }
  if (mod) return;
  // Alt+digit by physical key (Option changes e.key on a Mac); plain digits by the character they type
  const slot = e.altKey ? SLOT[e.code] : (settings.digits ? "123456".indexOf(e.key) : -1);
  if (slot === undefined || slot < 0) return;
  e.preventDefault();
  userAction();
  if (slot < 3) acceptWord(slot); else acceptChar(slot - 3);
});

// Arrow keys inside the letter keys (one tab stop for all of them).
$("keys").addEventListener("keydown", (e) => {
  const keys = [...$("keys").querySelectorAll(".key")];
  const i = keys.indexOf(document.activeElement);
  if (i < 0) return;
  const rtl = board.dir === "rtl";
  let j = -1;
  if (e.key === "ArrowRight") j = i + (rtl ? -1 : 1);
  else if (e.key === "ArrowLeft") j = i + (rtl ? 1 : -1);
  else if (e.key === "Home") j = 0;
  else if (e.key === "End") j = keys.length - 1;
  else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    const me = keys[i].getBoundingClientRect();
    const down = e.key === "ArrowDown";
    let best = Infinity;
    keys.forEach((k, n) => {
      const r = k.getBoundingClientRect();
      if (down ? r.top <= me.top + 2 : r.top >= me.top - 2) return;
      const d = Math.abs(r.top - me.top) * 1000 + Math.abs(r.left - me.left);
      if (d < best) { best = d; j = n; }
    });
  } else return;
  e.preventDefault();
  if (j >= 0 && j < keys.length) {
    keys[i].tabIndex = -1;
    keys[j].tabIndex = 0;
    keys[j].focus();
  }
});

text.addEventListener("beforeinput", (e) => {
  if (e.inputType === "historyUndo" || e.inputType === "historyRedo") { // the browser's menu: use ours
    e.preventDefault();
    if (e.inputType === "historyUndo") undo(); else redo();
    return;
  }
  if (e.inputType === "insertText" && e.data && autoSpace >= 0 && /^[\p{Po}\p{Pe}\p{Pf}]$/u.test(e.data)) {
    e.preventDefault(); // a punctuation mark right after a completed word replaces its space
    userAction();
    typeAfterWord(e.data);
    return;
  }
  // a typed word is one undo step; anything else (paste, delete, a space) is a step of its own
  const now = performance.now();
  const letter = e.inputType === "insertText" && e.data && /^[\p{L}\p{M}\p{N}]+$/u.test(e.data);
  if (!(letter && now - lastTyped < 2000)) pushUndo();
  lastTyped = letter ? now : 0;
});
text.addEventListener("input", () => { userAction(); changed(); });
document.addEventListener("selectionchange", () => {
  if (document.activeElement === text) { followScript(); predict(); }
});

// ------------------------------------------------------------------------------------------ settings

function applySettings() {
  keep("nextchar-settings", settings);
  const root = document.documentElement;
  root.dataset.theme = settings.theme;
  root.dataset.size = settings.size;
  root.dataset.access = settings.access;
  document.body.classList.toggle("probs", settings.probs);
  text.inputMode = settings.noOsk ? "none" : "text";
  document.querySelectorAll("[data-set]").forEach((b) => {
    b.setAttribute("aria-pressed", String(settings[b.dataset.set] === b.dataset.value));
  });
  document.querySelectorAll("[data-toggle]").forEach((b) => b.setAttribute("aria-pressed", String(!!settings[b.dataset.toggle])));
  $("dwellMs").textContent = `${settings.dwellMs} ms`;
  $("scanMs").textContent = `${(settings.scanMs / 1000).toFixed(1)} s`;
  $("lang").value = settings.lang;
  if (settings.access === "scan") { if (!scan.timer) startScan(); else scanRestart(); } else stopScan();
  if (settings.access !== "dwell") stopDwell();
  applyLanguage();
  if (asked && !asked.startsWith(`${settings.adapt}\u0000`)) predict(true);
}

$("lang").addEventListener("change", () => {
  userAction();
  settings.lang = $("lang").value;
  applySettings();
});

function fillLanguages() {
  const sel = $("lang");
  const codes = config.languages.length ? config.languages : Object.keys(LANG_SCRIPT);
  let names = null;
  try { names = new Intl.DisplayNames([navigator.language || "en"], { type: "language" }); } catch (e) { /* old browser */ }
  sel.replaceChildren(new Option("Automatic (from the text)", "auto"));
  for (const c of codes) sel.append(new Option(names ? `${names.of(c)} (${c})` : c, c));
  if (settings.lang !== "auto" && !codes.includes(settings.lang)) sel.append(new Option(settings.lang, settings.lang));
  sel.value = settings.lang;
}

async function loadKeys() {
  try {
    const d = await request("v1/keys");
    config = { maxText: d.max_text, maxBody: d.max_body, scripts: d.scripts, languages: d.languages || [] };
  } catch (e) {
    if (unreachable(e)) lost();
    else setStatus(`Could not load the keys: ${e.message}`, true);
    return;
  }
  letterScript.clear();
  for (const k of config.scripts) {
    for (const c of [...k.letters, ...k.more]) {
      letterScript.set(c, k.script);
      letterScript.set(c.toUpperCase(), k.script);
    }
  }
  fillLanguages();
  detected = null;
  followScript();
  applyLanguage();
  document.body.dataset.keys = "ready";
}

// ------------------------------------------------------------------------------------------ start

const draft = recall("nextchar-draft", sessionStorage) || recall("nextchar-draft");
if (draft && draft.v && !text.value) {
  text.value = draft.v;
  const a = Math.min(Number(draft.a) || draft.v.length, draft.v.length);
  text.setSelectionRange(a, a);
  setStatus(`Your text from last time is back (${fmt(Array.from(draft.v).length)} characters).`);
}
window.addEventListener("pagehide", saveDraft);
document.addEventListener("visibilitychange", () => { if (document.hidden) saveDraft(); });
applySettings();
loadKeys();
predict(true);
