// The web keyboard: asks /v1/predict for the text before the cursor and inserts the suggestion picked.
"use strict";

const $ = (id) => document.getElementById(id);
const text = $("text");
const group = $("suggestions");
const buttons = [...group.querySelectorAll(".sugg")];
const MAX_PREFIX = 16000; // UTF-16 units sent: well under the server's 64 KB body limit in any script
const NAMES = { " ": "space", "\u00a0": "no-break space", "\u200c": "ZWNJ", "\u200d": "ZWJ", "\t": "tab" };

let seq = 0; // the newest request; older answers are dropped, so fast typing never shows stale suggestions
let inflight = null;
let shown = []; // [{char, prob}] on the buttons now
let asked = null; // [prefix, adapt] of the newest request, to skip asking twice for the same thing

function newSessionId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b); // works on plain http too (crypto.randomUUID needs a secure context)
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function loadSession() {
  try {
    const s = sessionStorage.getItem("nextchar-session");
    if (s) return s;
  } catch (e) { /* storage may be disabled: a new id per page load is fine */ }
  return saveSession(newSessionId());
}

function saveSession(s) {
  try { sessionStorage.setItem("nextchar-session", s); } catch (e) { /* see loadSession */ }
  return s;
}

let session = loadSession();

// What a button shows for a character: invisible ones get a visible stand-in.
function label(ch) {
  if (ch === " ") return "␣";
  if (NAMES[ch]) return NAMES[ch];
  if (/\p{M}/u.test(ch)) return "\u25cc" + ch; // a combining mark needs a base to be seen
  if (/[\p{C}\p{Z}]/u.test(ch)) return "U+" + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return ch;
}

function percent(p) {
  return (p * 100).toFixed(p < 0.1 ? 1 : 0) + "%";
}

function setStatus(msg, isError = false) {
  $("status").textContent = msg;
  $("status").classList.toggle("error", isError);
}

function render(preds, prefix) {
  shown = preds;
  buttons.forEach((b, i) => {
    const s = preds[i];
    b.disabled = !s;
    b.querySelector(".ch").textContent = s ? label(s.char) : "";
    b.querySelector(".prob").textContent = s ? percent(s.prob) : "";
    b.dataset.char = s ? s.char : "";
    b.setAttribute("aria-label", s ? `Insert ${NAMES[s.char] || s.char}, ${percent(s.prob)}` : "no suggestion");
  });
  group.dataset.prefix = prefix; // which text these suggestions are for (tests wait on it)
  group.dataset.ready = "true";
}

function prefixNow() {
  return text.value.slice(0, text.selectionStart).slice(-MAX_PREFIX);
}

async function post(path, body, signal) {
  const r = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  let data = {};
  try { data = await r.json(); } catch (e) { /* a proxy's HTML error page */ }
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

async function predict(force = false) {
  const prefix = prefixNow();
  const adapt = $("adapt").checked;
  if (!force && asked && asked[0] === prefix && asked[1] === adapt) return;
  asked = [prefix, adapt];
  const my = ++seq;
  if (inflight) inflight.abort();
  inflight = new AbortController();
  group.dataset.ready = "false";
  const body = { prefix, k: 3 };
  if (adapt) body.session = session;
  const t0 = performance.now();
  try {
    const data = await post("v1/predict", body, inflight.signal);
    if (my !== seq) return;
    render(data.predictions, prefix);
    $("latency").textContent = `${(performance.now() - t0).toFixed(1)} ms`;
    $("model").textContent = data.model + (data.adapted ? " (adapted)" : "");
    // Clear only an earlier failure: "Remembered"/"Forgotten" must stay readable past the next prediction.
    if ($("status").classList.contains("error")) setStatus("");
  } catch (e) {
    if (e.name !== "AbortError" && my === seq) {
      asked = null; // the next keystroke or cursor move tries again
      setStatus(`Prediction failed: ${e.message}`, true);
    }
  }
}

function insert(ch) {
  text.focus();
  // execCommand keeps the browser's undo history; setRangeText is the fallback where it is gone
  if (!document.execCommand || !document.execCommand("insertText", false, ch)) {
    text.setRangeText(ch, text.selectionStart, text.selectionEnd, "end");
    text.dispatchEvent(new Event("input", { bubbles: true }));
  }
}

function accept(slot) {
  const s = shown[slot];
  if (s && group.dataset.ready === "true") insert(s.char);
}

buttons.forEach((b) => {
  b.addEventListener("mousedown", (e) => e.preventDefault()); // keep the cursor (and a phone's keyboard) in the box
  b.addEventListener("click", () => accept(Number(b.dataset.slot)));
});

const ALT_SLOT = { Digit1: 0, Digit2: 1, Digit3: 2, Numpad1: 0, Numpad2: 1, Numpad3: 2 };
document.addEventListener("keydown", (e) => {
  if (e.isComposing || e.ctrlKey || e.metaKey) return;
  // Alt+digit by physical key (Option changes e.key on a Mac); plain digits by the character they type
  const slot = e.altKey ? ALT_SLOT[e.code] : ($("digits").checked ? ["1", "2", "3"].indexOf(e.key) : -1);
  if (slot === undefined || slot < 0) return;
  e.preventDefault();
  accept(slot);
});

text.addEventListener("input", () => predict());
document.addEventListener("selectionchange", () => { if (document.activeElement === text) predict(); });
$("adapt").addEventListener("change", () => predict(true));

$("done").addEventListener("click", async () => {
  const t = text.value;
  if (t && $("adapt").checked) {
    try {
      const r = await post("v1/session/observe", { session, text: t });
      setStatus(`Remembered (${r.history_chars} characters this session).`);
    } catch (e) {
      setStatus(`Could not remember the text: ${e.message}`, true);
    }
  }
  text.value = "";
  text.focus();
  predict(true);
});

$("forget").addEventListener("click", async () => {
  try {
    await post("v1/session/forget", { session });
    setStatus("Forgotten: the server keeps nothing of your writing now.");
  } catch (e) {
    setStatus(`Could not forget: ${e.message}`, true);
  }
  session = saveSession(newSessionId());
  predict(true);
});

predict(true);
