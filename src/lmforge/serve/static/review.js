// lmforge review page: shows one review item, lets the reviewer accept or correct it from the
// keyboard, and posts the decision to /review/api. Offsets are code points (Python's str
// indices), not JavaScript's UTF-16 units, so text is handled as Array.from(text).
"use strict";

const PALETTE = ["#2f5bd3", "#d1335b", "#1f8a4c", "#d9730d", "#7a3fd1", "#0e8aa3", "#a88000",
                 "#b8325a", "#4d7c0f", "#6b4f2a"];
const $ = (id) => document.getElementById(id);

const state = {
  queue: null,      // the queue being reviewed
  item: null,       // the item shown (the API's JSON)
  label: null,      // classify: the chosen label
  spans: [],        // ner: the entities as they stand, {start, end, label, score?}
  chars: [],        // the text as code points
  shownAt: 0,       // when the item appeared (performance.now())
  busy: false,      // a request is in flight: keys wait
};

// ---- API ----------------------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(`/review/api/${path}`, {
    credentials: "same-origin",
    headers: {"Content-Type": "application/json"},
    ...options,
  });
  if (response.status === 401) {  // the key was withdrawn: the server shows the key form again
    location.reload();
    throw new Error("signed out");
  }
  return response;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? JSON.stringify(body);
  } catch {
    return `HTTP ${response.status}`;
  }
}

// ---- sign in (the key form the server shows instead of the page) ---------------------------

async function login() {
  const response = await fetch("/review/login", {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({key: $("key").value}),
  });
  if (!response.ok) {
    $("login-error").textContent = response.status === 401 ? "That key is not valid here."
                                                            : await errorMessage(response);
    $("key").select();
    return;
  }
  location.reload();
}

async function logout() {
  await fetch("/review/logout", {method: "POST", credentials: "same-origin"});
  location.reload();
}

// ---- queue and progress -------------------------------------------------------------------

async function start() {
  const response = await api("queues");
  const {queues, reviewer} = await response.json();
  $("who").textContent = reviewer === "anonymous" ? "" : `key ${reviewer}`;
  $("logout").hidden = reviewer === "anonymous";
  const names = Object.keys(queues).sort();
  const wanted = new URLSearchParams(location.search).get("queue");
  const firstPending = names.find((name) => (queues[name].pending ?? 0) > 0);
  state.queue = names.includes(wanted) ? wanted : firstPending ?? names[0] ?? "default";
  $("queue").replaceChildren(...names.map((name) => new Option(name, name, false, name === state.queue)));
  $("queue-picker").hidden = names.length === 0;
  showCounts(queues[state.queue]);
  await next(null);
}

function showCounts(counts = {}) {
  const done = (counts.done ?? 0) + (counts.skipped ?? 0);
  const pending = counts.pending ?? 0;
  $("progress").hidden = false;
  $("counts").textContent = `${done} done · ${pending} pending`;
  $("meter-fill").style.width = `${done + pending ? (100 * done) / (done + pending) : 0}%`;
}

async function refreshCounts() {
  const {queues} = await (await api("queues")).json();
  showCounts(queues[state.queue]);
}

async function next(after) {
  const query = new URLSearchParams({queue: state.queue});
  if (after !== null) query.set("after", after);
  const response = await api(`next?${query}`);
  if (response.status === 204) {
    state.item = null;
    $("item").hidden = true;
    $("empty").hidden = false;
    return;
  }
  show(await response.json());
}

// ---- one item -----------------------------------------------------------------------------

function show(item) {
  state.item = item;
  state.chars = Array.from(item.text);
  state.label = item.task === "classify" ? item.prediction.label ?? null : null;
  state.spans = item.task === "ner" ? (item.prediction.spans ?? []).map((s) => ({...s})) : [];
  state.shownAt = performance.now();
  document.body.className = item.task;
  $("empty").hidden = true;
  $("item").hidden = false;
  $("item").dataset.id = item.id;
  showMeta(item);
  $("classify").hidden = item.task !== "classify";
  $("ner").hidden = item.task !== "ner";
  if (item.task === "classify") {
    $("text").textContent = item.text;
    $("filter").value = "";
    $("filter").hidden = item.labels.length <= 10;
    showPrediction(item);
    showChoices();
  } else {
    showLegend(item.labels);
    renderEntities();
  }
}

function showMeta(item) {
  const source = {label: "pre-labelled", mined: "mined from traffic", import: "imported"}[item.source];
  const parts = [[item.task, "task"], [`#${item.id}`], [source ?? item.source]];
  if (item.reason) parts.push([item.reason]);
  if (item.model_version) parts.push([`model ${item.model_version}`]);
  $("meta").replaceChildren(...parts.map(([text, cls]) => {
    const el = document.createElement("span");
    el.textContent = text;
    if (cls) el.className = cls;
    return el;
  }));
}

function showPrediction(item) {
  const {label, score} = item.prediction;
  const line = $("predicted");
  line.replaceChildren("Model says ");
  const name = document.createElement("b");
  name.textContent = label ?? "–";
  line.append(name);
  if (typeof score === "number") {
    const bar = document.createElement("span");
    bar.className = "score";
    const fill = document.createElement("span");
    fill.style.width = `${Math.round(score * 100)}%`;
    bar.append(fill);
    line.append(bar, `${(score * 100).toFixed(0)}%`);
  }
}

function visibleLabels() {
  const filter = $("filter").value.trim().toLowerCase();
  return state.item.labels.filter((label) => label.toLowerCase().includes(filter));
}

function keyName(index) {
  return index < 9 ? String(index + 1) : index === 9 ? "0" : "";
}

function showChoices() {
  const items = visibleLabels().map((label, index) => {
    const li = document.createElement("li");
    li.dataset.label = label;
    li.classList.toggle("chosen", label === state.label);
    li.classList.toggle("predicted-label", label === state.item.prediction.label);
    const key = keyName(index);
    if (key) {
      const kbd = document.createElement("kbd");
      kbd.textContent = key;
      li.append(kbd);
    }
    li.append(label);
    li.addEventListener("click", () => choose(label));
    return li;
  });
  $("choices").replaceChildren(...items);
}

function choose(label) {
  state.label = label;
  showChoices();
}

// ---- entities -----------------------------------------------------------------------------

function colour(label) {
  const index = state.item.labels.indexOf(label);
  return PALETTE[(index < 0 ? state.item.labels.length : index) % PALETTE.length];
}

function showLegend(labels) {
  $("legend").replaceChildren(...labels.map((label, index) => {
    const li = document.createElement("li");
    li.style.setProperty("--c", colour(label));
    const kbd = document.createElement("kbd");
    kbd.textContent = keyName(index) || "·";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    li.append(kbd, swatch, label);
    return li;
  }));
}

// The text as runs of code points, each run a <span data-s data-e> (words get class "w"), and
// the entities as <mark>s around their runs: a DOM selection maps back to offsets through them.
// Labels are CSS generated content, so the box's text stays exactly the item's text.
function renderEntities() {
  const box = $("text");
  box.replaceChildren();
  const order = state.spans.map((span, index) => ({span, index})).sort((a, b) => a.span.start - b.span.start);
  let at = 0;
  for (const {span, index} of order) {
    appendRuns(box, at, span.start);
    const mark = document.createElement("mark");
    mark.className = "ent";
    mark.tabIndex = 0;
    mark.dataset.index = index;
    mark.style.setProperty("--c", colour(span.label));
    if (typeof span.score === "number") {
      mark.title = `${span.label} · ${(span.score * 100).toFixed(0)}%`;
      mark.classList.toggle("low", span.score < 0.5);
    }
    mark.dataset.label = span.label;  // shown by CSS after the words, outside the text's content
    appendRuns(mark, span.start, span.end);
    box.append(mark);
    at = span.end;
  }
  appendRuns(box, at, state.chars.length);
}

function appendRuns(parent, from, to) {
  let cut = from;
  for (const [start, end] of state.item.words) {
    if (end <= from || start >= to) continue;
    const [s, e] = [Math.max(start, from), Math.min(end, to)];
    if (s > cut) parent.append(run(cut, s, false));
    parent.append(run(s, e, true));
    cut = e;
  }
  if (to > cut) parent.append(run(cut, to, false));
}

function run(start, end, word) {
  const el = document.createElement("span");
  el.dataset.s = start;
  el.dataset.e = end;
  if (word) el.className = "w";
  el.textContent = state.chars.slice(start, end).join("");
  return el;
}

// The code point offset of a DOM boundary point inside the text box.
function offsetOf(node, offset) {
  if (node.nodeType === Node.TEXT_NODE && node.parentElement.dataset.s !== undefined) {
    return Number(node.parentElement.dataset.s) + Array.from(node.data.slice(0, offset)).length;
  }
  const point = document.createRange();
  point.setStart(node, offset);
  for (const el of $("text").querySelectorAll("[data-s]")) {
    if (point.comparePoint(el, 0) >= 0) return Number(el.dataset.s);  // first run at or after it
  }
  return state.chars.length;
}

// The selection, snapped outwards to whole words; null when it covers no word of the text.
function selectedWords() {
  const selection = getSelection();
  if (!selection.rangeCount || selection.isCollapsed) return null;
  const range = selection.getRangeAt(0);
  const box = $("text");
  if (!range.intersectsNode(box)) return null;
  const start = box.contains(range.startContainer) ? offsetOf(range.startContainer, range.startOffset) : 0;
  const end = box.contains(range.endContainer) ? offsetOf(range.endContainer, range.endOffset)
                                               : state.chars.length;
  const hit = state.item.words.filter(([s, e]) => s < end && e > start);
  return hit.length ? {start: hit[0][0], end: hit[hit.length - 1][1]} : null;
}

function tag(label) {
  const chosen = selectedWords();
  const focused = document.activeElement?.closest?.("mark.ent");
  if (chosen) {
    const kept = state.spans.filter((s) => s.end <= chosen.start || s.start >= chosen.end);
    state.spans = [...kept, {...chosen, label}];
    getSelection().removeAllRanges();
  } else if (focused) {
    const index = Number(focused.dataset.index);
    state.spans[index] = {start: state.spans[index].start, end: state.spans[index].end, label};
  } else {
    toast("Select some words first, then press the type's key.", true);
    return;
  }
  renderEntities();
}

function removeSpan(index) {
  state.spans.splice(index, 1);
  renderEntities();
}

// ---- decisions ----------------------------------------------------------------------------

async function save() {
  const item = state.item;
  if (!item) return;
  const body = {accepted: true, seconds: (performance.now() - state.shownAt) / 1000};
  if (item.task === "classify") {
    body.label = state.label;
    body.accepted = state.label === item.prediction.label;
  } else {
    body.spans = state.spans.map(({start, end, label}) => ({start, end, label}));
  }
  const response = await api(`items/${item.id}/correction`, {method: "POST", body: JSON.stringify(body)});
  if (!response.ok) {
    toast(await errorMessage(response), true);
    return;
  }
  const saved = await response.json();
  toast(saved.edits ? `Saved #${item.id} · ${saved.edits} edit${saved.edits > 1 ? "s" : ""}`
                    : `Accepted #${item.id}`);
  await Promise.all([refreshCounts(), next(item.id)]);
}

async function skip() {
  if (state.item) await next(state.item.id);
}

let toastTimer = 0;
function toast(text, bad = false) {
  const el = $("toast");
  el.textContent = text;
  el.classList.toggle("bad", bad);
  el.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("shown"), 2200);
}

// ---- keyboard and mouse -------------------------------------------------------------------

async function busy(action) {
  if (state.busy) return;
  state.busy = true;
  try {
    await action();
  } catch (error) {
    if (error.message !== "signed out") toast(error.message, true);
  } finally {
    state.busy = false;
  }
}

function onKey(event) {
  const target = event.target;
  if (target.matches("input, select, textarea, button")) {
    if (target === $("filter")) onFilterKey(event);
    return;
  }
  if (!state.item || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (key === "Enter") {
    event.preventDefault();
    busy(save);
  } else if (key === "s") {
    busy(skip);
  } else if (/^[0-9]$/.test(key)) {
    digit(key === "0" ? 9 : Number(key) - 1);
  } else if ((key === "Backspace" || key === "Delete") && target.matches("mark.ent")) {
    event.preventDefault();
    removeSpan(Number(target.dataset.index));
  } else if (key === "/" && !$("filter").hidden) {
    event.preventDefault();
    $("filter").focus();
  } else if (key === "Escape") {
    getSelection().removeAllRanges();
  }
}

function digit(index) {
  if (state.item.task === "classify") {
    const label = visibleLabels()[index];
    if (label !== undefined) choose(label);
  } else if (index < state.item.labels.length) {
    tag(state.item.labels[index]);
  }
}

function onFilterKey(event) {
  if (event.key === "Enter") {
    event.preventDefault();
    const first = visibleLabels()[0];
    if (first !== undefined) choose(first);
    $("filter").blur();
  } else if (event.key === "Escape") {
    $("filter").blur();
  }
}

function onTextClick(event) {
  const mark = event.target.closest("mark.ent");
  if (mark && getSelection().isCollapsed) removeSpan(Number(mark.dataset.index));
}

document.addEventListener("DOMContentLoaded", () => {
  if ($("login-form")) {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      busy(login);
    });
    return;
  }
  $("logout").addEventListener("click", () => busy(logout));
  $("queue").addEventListener("change", (event) => busy(async () => {
    state.queue = event.target.value;
    history.replaceState(null, "", `?${new URLSearchParams({queue: state.queue})}`);  // kept on reload
    event.target.blur();
    await Promise.all([refreshCounts(), next(null)]);
  }));
  $("filter").addEventListener("input", showChoices);
  $("text").addEventListener("click", onTextClick);
  document.addEventListener("keydown", onKey);
  busy(start);
});
