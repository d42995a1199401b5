// The /viewer/ admin UI. Everything shown comes from the /admin/v1 routes,
// called with the admin key as an Authorization header. User content is
// only ever put on the page as text nodes (see `el`), never parsed as HTML.
"use strict";

const KEY_STORAGE = "progressdb.adminKey";
const PAGE_SIZE = 50;
const STATS_EVERY_MS = 5000;

const state = {
  key: null,
  threadsCursor: null,
  // Bumped by every thread search, so an answer that arrives after a newer
  // search was started is dropped instead of replacing its results.
  threadsSearch: 0,
  thread: null, // the open thread's id
  messagesCursor: null,
  live: null, // AbortController of the open live tail
  statsTimer: null,
};

const $ = (id) => document.getElementById(id);

/** An element with attributes and children; strings become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** GET an admin route; errors carry the server's `{error, message}`. */
async function api(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const url = query.toString() ? `${path}?${query}` : path;
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${state.key}` },
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const code = body && body.error ? body.error : `http_${response.status}`;
    const message = body && body.message ? body.message : response.statusText;
    if (response.status === 401 || response.status === 403) signOut(`Key rejected: ${message}`);
    throw new HttpError(response.status, code, message);
  }
  return body;
}

function formatTs(ns) {
  if (typeof ns !== "number") return "";
  return new Date(ns / 1e6).toISOString().replace("T", " ").replace("Z", "");
}

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** A message body as text: a string, `{"text": ...}`, or its JSON. */
function bodyText(body) {
  if (typeof body === "string") return body;
  if (body && typeof body === "object" && typeof body.text === "string") return body.text;
  return JSON.stringify(body);
}

// ---- key -----------------------------------------------------------------

function signIn(key) {
  state.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  loadStats();
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(loadStats, STATS_EVERY_MS);
  searchThreads();
}

function signOut(reason) {
  state.key = null;
  sessionStorage.removeItem(KEY_STORAGE);
  clearInterval(state.statsTimer);
  stopLive();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("key").value = "";
  setStatus(reason || "", Boolean(reason));
}

// ---- stats ---------------------------------------------------------------

async function loadStats() {
  let stats;
  try {
    stats = await api("/admin/v1/stats");
  } catch (err) {
    setStatus(`Stats: ${err.message}`, true);
    return;
  }
  const rows = stats.shards.map((shard) => {
    const wal = shard.wal || {};
    const requests = shard.requests || {};
    const cell = (value) => el("td", {}, String(value ?? ""));
    return el(
      "tr",
      { "data-shard": String(shard.shard) },
      el("td", {}, `shard ${shard.shard}`),
      cell(shard.messages),
      cell(requests.total),
      cell((requests.per_second_10s ?? 0).toFixed(1)),
      cell((requests.per_second_60s ?? 0).toFixed(1)),
      cell(wal.appends),
      cell(wal.fsyncs),
      cell((wal.records_per_fsync ?? 0).toFixed(2)),
      cell(formatBytes(wal.disk_bytes)),
      cell(wal.durable_lsn),
    );
  });
  $("stats").tBodies[0].replaceChildren(...rows);
}

// ---- threads -------------------------------------------------------------

function searchParams(cursor) {
  const mode = $("search-mode").value;
  const text = $("search-text").value.trim();
  const params = {
    limit: PAGE_SIZE,
    include_deleted: $("search-deleted").checked ? "true" : "false",
  };
  if (text) params[mode] = text;
  if (mode === "author" && text) {
    // An author's threads come newest first; older ones are `after`.
    params.sort_by = "created_ts";
  } else {
    // Otherwise the listing is in id order; generated ids sort by creation
    // time, so descending shows the newest threads first.
    params.sort_by = "id_desc";
  }
  params.after = cursor;
  return params;
}

async function searchThreads(more) {
  const cursor = more ? state.threadsCursor : null;
  const search = ++state.threadsSearch;
  let page;
  try {
    page = await api("/admin/v1/threads", searchParams(cursor));
  } catch (err) {
    setStatus(`Threads: ${err.message}`, true);
    return;
  }
  if (search !== state.threadsSearch) return;
  const items = page.threads.map((thread) => {
    const button = el(
      "button",
      {
        type: "button",
        class: `thread-item${thread.deleted ? " deleted" : ""}`,
        "data-thread": thread.key,
        onclick: () => openThread(thread.key),
      },
      el("strong", {}, thread.title || "(untitled)"),
      thread.deleted ? el("span", { class: "badge" }, "deleted") : null,
      el("br"),
      el("small", {}, `${thread.key} · ${thread.author} · ${formatTs(thread.created_ts)}`),
    );
    return el("li", {}, button);
  });
  if (more) $("threads").append(...items);
  else $("threads").replaceChildren(...items);
  state.threadsCursor = page.pagination.has_after ? page.pagination.after_anchor : null;
  $("threads-more").hidden = !state.threadsCursor;
  setStatus(`${$("threads").children.length} thread(s)`);
}

// ---- one thread ----------------------------------------------------------

async function openThread(id) {
  stopLive();
  state.thread = id;
  state.messagesCursor = null;
  for (const item of document.querySelectorAll(".thread-item")) {
    item.classList.toggle("selected", item.dataset.thread === id);
  }
  $("thread-panel").hidden = false;
  $("messages").replaceChildren();
  let thread;
  try {
    thread = (await api(`/admin/v1/threads/${encodeURIComponent(id)}`)).thread;
  } catch (err) {
    setStatus(`Thread: ${err.message}`, true);
    return;
  }
  if (state.thread !== id) return;
  $("thread-title").textContent = thread.title || "(untitled)";
  $("thread-title").classList.toggle("deleted", Boolean(thread.deleted));
  $("thread-meta").textContent =
    `${thread.key} · by ${thread.author} · created ${formatTs(thread.created_ts)}` +
    (thread.deleted ? " · deleted" : "");
  await loadParticipants(id);
  await loadMessages(false);
  if (thread.deleted) {
    setLive("Live updates are off: the thread is deleted.", false);
  } else {
    startLive(id);
  }
}

const PARTICIPANTS_SHOWN = 100;

/** The open thread's owner and participants, as "user (role)" chips. */
async function loadParticipants(id) {
  $("participants").replaceChildren();
  let page;
  try {
    page = await api(`/admin/v1/threads/${encodeURIComponent(id)}/participants`, {
      limit: PARTICIPANTS_SHOWN,
    });
  } catch (err) {
    setStatus(`Participants: ${err.message}`, true);
    return;
  }
  if (state.thread !== id) return;
  const chips = page.participants.map((p) =>
    el("li", { class: "participant", "data-user": p.user_id }, `${p.user_id} (${p.role})`),
  );
  const more = page.pagination.total - page.participants.length;
  if (more > 0) chips.push(el("li", { class: "more" }, `and ${more} more`));
  $("participants").replaceChildren(...chips);
}

function messageNode(message, live) {
  const classes = ["message"];
  if (message.deleted) classes.push("deleted");
  if (live) classes.push("live");
  const meta = [message.author, formatTs(message.created_ts)];
  if (message.role) meta.push(message.role);
  if (message.version > 1) meta.push(`edited (v${message.version})`);
  const versions = el(
    "button",
    {
      type: "button",
      class: "link show-versions",
      onclick: (event) => toggleVersions(message.key, event.currentTarget.closest(".message")),
    },
    "versions",
  );
  return el(
    "li",
    { class: classes.join(" "), "data-id": message.key },
    el(
      "div",
      { class: "meta" },
      meta.join(" · "),
      message.deleted ? el("span", { class: "badge" }, "deleted") : null,
      " ",
      versions,
    ),
    el("div", { class: "body" }, bodyText(message.body)),
  );
}

async function loadMessages(older) {
  const id = state.thread;
  let page;
  try {
    page = await api(`/admin/v1/threads/${encodeURIComponent(id)}/messages`, {
      limit: PAGE_SIZE,
      before: older ? state.messagesCursor : null,
    });
  } catch (err) {
    setStatus(`Messages: ${err.message}`, true);
    return;
  }
  if (state.thread !== id) return;
  const list = $("messages");
  // Pages are oldest first; the viewer shows the newest on top.
  for (const message of page.messages.slice().reverse()) {
    // A live event may have shown it already.
    if (!list.querySelector(`[data-id="${CSS.escape(message.key)}"]`)) {
      list.append(messageNode(message, false));
    }
  }
  state.messagesCursor = page.pagination.has_before ? page.pagination.before_anchor : null;
  $("older").hidden = !state.messagesCursor;
  setStatus(`${list.children.length} message(s) shown`);
}

async function toggleVersions(messageId, node) {
  const open = node.querySelector(".versions");
  if (open) {
    open.remove();
    return;
  }
  let page;
  try {
    page = await api(
      `/admin/v1/threads/${encodeURIComponent(state.thread)}` +
        `/messages/${encodeURIComponent(messageId)}/versions?limit=1000`,
    );
  } catch (err) {
    setStatus(`Versions: ${err.message}`, true);
    return;
  }
  const items = page.versions.map((version) =>
    el(
      "li",
      { class: "version", "data-version": String(version.version) },
      el("span", { class: "meta" }, `v${version.version} · ${version.author} · ${formatTs(version.created_ts)}: `),
      el("span", { class: "version-body" }, bodyText(version.body)),
    ),
  );
  node.append(el("ol", { class: "versions" }, ...items));
}

// ---- live tail -----------------------------------------------------------

function setLive(text, on) {
  $("live-status").textContent = text;
  $("live-status").classList.toggle("on", Boolean(on));
}

function stopLive() {
  if (state.live) state.live.abort();
  state.live = null;
}

function applyEvent(kind, data) {
  let message;
  try {
    message = JSON.parse(data);
  } catch (_) {
    return;
  }
  if (!message || message.thread !== state.thread) return;
  const list = $("messages");
  const existing = list.querySelector(`[data-id="${CSS.escape(message.key)}"]`);
  const node = messageNode(message, true);
  if (existing) existing.replaceWith(node);
  else if (kind === "message.created") list.prepend(node);
}

/**
 * EventSource cannot send an Authorization header, so the stream is read
 * with fetch and parsed here. On a drop it reconnects with Last-Event-ID,
 * and the server replays what was missed.
 */
async function startLive(id) {
  const controller = new AbortController();
  state.live = controller;
  let lastEventId = null;
  while (!controller.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch(
        `/admin/v1/threads/${encodeURIComponent(id)}/messages/stream`,
        { headers, signal: controller.signal, cache: "no-store" },
      );
      if (!response.ok || !response.body) {
        setLive(`Live updates unavailable (HTTP ${response.status}).`, false);
        return;
      }
      setLive("Live: connected", true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let kind = "message";
          const data = [];
          let eventId = null;
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") kind = text;
            else if (field === "data") data.push(text);
            else if (field === "id") eventId = text;
          }
          if (eventId !== null) lastEventId = eventId;
          if (data.length) applyEvent(kind, data.join("\n"));
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    if (controller.signal.aborted) return;
    setLive("Live: reconnecting…", false);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- wiring --------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (key) signIn(key);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    searchThreads(false);
  });
  $("threads-more").addEventListener("click", () => searchThreads(true));
  $("older").addEventListener("click", () => loadMessages(true));
  $("stats-refresh").addEventListener("click", loadStats);
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) signIn(saved);
});
