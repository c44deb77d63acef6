/**
 * chat.js: a chat as a list of streams, one per assistant answer, on top of resumable.js. No DOM,
 * no framework: the demo page renders it with plain DOM calls, the React hook with state.
 *
 *   const chat = openChat(client, "abc");         // loads the chat's earlier answers from the hub
 *   chat.onChange(() => render(chat.messages));   // [{stream, prompt, text, status, error, offset}]
 *   await chat.ask("How do offsets work?");       // POST /demo/ask, then follows the new stream
 *   chat.stop();                                  // cancel whatever is still streaming
 *
 * The list of answers comes from the hub's "watch" op over the client's WebSocket: a snapshot on
 * every (re)connect, then an event the moment any tab or device starts or deletes an answer. Where
 * that cannot work (SSE mode, an older hub) the chat polls GET /chats/{id} every `pollMs`, and on a
 * hub without /chats, GET /streams?prefix=chat/{id}/ (ids only: the prompts then come from
 * localStorage, so another browser shows the answers without their questions).
 */

const PROMPTS = "resumable:prompt:";

export function openChat(client, chatId, options = {}) {
  return new Chat(client, chatId, options);
}

/** A chat id for a new conversation: 12 URL-safe characters. */
export function newChatId() {
  const a = new Uint8Array(9);
  crypto.getRandomValues(a);
  return btoa(String.fromCharCode(...a)).replace(/\+/g, "-").replace(/\//g, "_");
}

export class Chat {
  static noChatsEndpoint = false; // learnt from the first 404

  constructor(client, chatId, { askPath = "/demo/ask", rate = null, pollMs = 2000 } = {}) {
    this.client = client;
    this.chatId = chatId;
    this.askPath = askPath;
    this.rate = rate; // the simulated model's tokens per second (demo only)
    this.messages = []; // oldest first
    this.status = "loading"; // loading | idle | streaming | error
    this.error = null;
    this._subs = new Map();
    this._listeners = new Set();
    this._closed = false;
    this._poll = null;
    this.pollMs = pollMs;
    this._polling = false;
    this.ready = this.refresh(); // at once over HTTP, whether or not the WebSocket is up yet
    this._unwatch = client.watchChat(chatId, {
      onSnapshot: (streams) => {
        for (const it of streams) this._add(it.stream, it.labels?.prompt ?? storedPrompt(it.stream));
        this.error = null;
        this._update();
      },
      onEvent: (ev) => {
        if (ev.event === "created") this._add(ev.stream, ev.labels?.prompt ?? storedPrompt(ev.stream));
        else if (ev.event === "deleted") this._remove(ev.stream);
      },
      onUnsupported: () => this._startPolling(),
    });
  }

  onChange(fn) {
    this._listeners.add(fn);
    return () => this._listeners.delete(fn);
  }

  /** Start an answer: the hub's demo model streams it into a new stream; returns the stream id. */
  async ask(prompt) {
    const body = { chat: this.chatId, prompt };
    if (this.rate) body.rate = this.rate;
    const init = { method: "POST", body: JSON.stringify(body) };
    // an absolute askPath is the app's own backend, on any origin; a path is on the hub
    const r = /^https?:\/\//.test(this.askPath)
      ? await askBackend(this.askPath, init, await this.client._token())
      : await this.client.fetchJson(this.askPath, init);
    try {
      localStorage.setItem(PROMPTS + r.stream, prompt);
    } catch {
      /* only a fallback for hubs without /chats */
    }
    this._add(r.stream, prompt);
    return r.stream;
  }

  /** Ask every answer still streaming to stop. */
  stop() {
    return Promise.all(
      this.messages.filter((m) => isStreaming(m.status)).map((m) => this.client.cancel(m.stream)),
    );
  }

  /** Reload the list of streams from the hub (new answers from other tabs appear). */
  async refresh() {
    try {
      const items = await this._history();
      if (this._closed) return;
      for (const it of items) this._add(it.stream, it.prompt);
      this.error = null;
    } catch (e) {
      this.error = e.message || String(e);
    }
    this._update();
  }

  close() {
    this._closed = true;
    this._unwatch();
    clearTimeout(this._poll);
    for (const sub of this._subs.values()) sub.unsubscribe();
    this._subs.clear();
    this._listeners.clear();
  }

  async _history() {
    const prefix = `chat/${this.chatId}/`;
    if (!Chat.noChatsEndpoint) {
      try {
        const r = await this.client.fetchJson(`/chats/${encodeURIComponent(this.chatId)}`);
        return r.streams.map((s) => ({ stream: s.stream, prompt: s.labels?.prompt ?? storedPrompt(s.stream) }));
      } catch (e) {
        if (e.status !== 404 && e.status !== 405) throw e;
        Chat.noChatsEndpoint = true; // an older hub: do not ask again on every poll
      }
    }
    const r = await this.client.fetchJson(`/streams?prefix=${encodeURIComponent(prefix)}`);
    return r.streams.map((id) => ({ stream: id, prompt: storedPrompt(id) }));
  }

  _add(stream, prompt) {
    if (this._subs.has(stream) || this._closed) return;
    const msg = { stream, prompt, text: "", chunks: [], status: "connecting", error: null, offset: 0 };
    this.messages.push(msg);
    this.messages.sort((a, b) => (a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : 0));
    const sub = this.client.subscribe(stream, {
      onUpdate: (snap) => {
        const i = this.messages.findIndex((m) => m.stream === stream);
        if (i < 0) return;
        this.messages[i] = {
          ...this.messages[i],
          text: snap.text,
          chunks: snap.chunks,
          status: snap.status,
          error: snap.error,
          offset: snap.offset,
        };
        this._update();
      },
    });
    this._subs.set(stream, sub);
    this._update();
  }

  _remove(stream) {
    const sub = this._subs.get(stream);
    if (!sub) return;
    sub.unsubscribe();
    this.client.forget(stream);
    this._subs.delete(stream);
    this.messages = this.messages.filter((m) => m.stream !== stream);
    this._update();
  }

  _update() {
    if (this._closed) return;
    const streaming = this.messages.some((m) => isStreaming(m.status));
    this.status = streaming ? "streaming" : this.error && !this.messages.length ? "error" : "idle";
    this.messages = this.messages.slice(); // a new array per change: cheap equality for views
    for (const fn of [...this._listeners]) fn(this);
  }

  _startPolling() {
    if (this._polling) return;
    this._polling = true;
    this._schedulePoll();
  }

  _schedulePoll() {
    if (this._closed || !this.pollMs) return;
    this._poll = setTimeout(async () => {
      if (!globalThis.document || document.visibilityState !== "hidden") await this.refresh();
      this._schedulePoll();
    }, this.pollMs);
  }
}

async function askBackend(url, init, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(url, { ...init, headers, cache: "no-store" });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(body?.error?.message || `${url}: HTTP ${r.status}`);
  if (!body || typeof body.stream !== "string") throw new Error(`${url} must answer {"stream": id}`);
  return body;
}

export function isStreaming(status) {
  return status === "connecting" || status === "streaming";
}

function storedPrompt(stream) {
  try {
    return localStorage.getItem(PROMPTS + stream);
  } catch {
    return null;
  }
}
