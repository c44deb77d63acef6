/**
 * resumable.js: the browser client of resumable-hub. An ES module, no build step, no dependencies.
 *
 *   import { connect } from "/static/resumable.js";
 *   const client = connect("/ws", { token });            // one WebSocket for every stream
 *   const sub = client.subscribe("chat/42/0001-12345", {
 *     onChunk: (data, offset) => output.append(data),    // each chunk exactly once, in order
 *     onEnd: (status, error) => ...,                     // "done" | "error" | "cancelled"
 *   });
 *   client.onState((state) => ...);                      // connecting | live | reconnecting | closed
 *
 * Invariants:
 * - Per stream, `next` is the offset of the next chunk the client accepts. A frame that starts before
 *   `next` is trimmed (or dropped), a frame that starts after it is a gap: the client resubscribes
 *   from `next` instead of showing it. So every listener sees chunks 0, 1, 2, ... once each.
 * - What a stream holds (its chunks, offset and epoch) is written to sessionStorage as one record, so
 *   after a reload the page shows the same text at once and asks the hub only for what follows.
 * - A resume position is (epoch, offset). If the hub answers `reset` (its epoch changed), the client
 *   drops what it holds, tells the app (onReset) and starts again from 0: never a silent gap.
 * - Transport: WebSocket, with app-level ping/pong; after `sseAfterFailures` WebSocket attempts that
 *   never opened while plain HTTP works (a proxy that blocks upgrades), or when `WebSocket` does not
 *   exist, or with `transport: "sse"`, each stream is read with EventSource instead.
 */

const STORE_PREFIX = "resumable:v1:";
const TERMINAL_CODES = new Set([
  "stream_not_found",
  "stream_gone",
  "forbidden",
  "unauthorized",
  "invalid_stream_id",
  "invalid_offset",
  "too_many_subscriptions",
  "bad_request",
]);
const FATAL_CLOSE = 4401; // the token was refused: retrying with it cannot help

const DEFAULTS = {
  token: null, // string, or a function returning one (or a Promise of one), asked before each connect
  transport: "auto", // "auto" | "ws" | "sse"
  httpUrl: null, // base URL of the HTTP API; derived from the WebSocket URL when null
  heartbeatMs: 15000, // send {"op":"ping"} this long after the last pong
  heartbeatTimeoutMs: 5000, // no pong within this: the connection is dead, reconnect
  connectTimeoutMs: 10000, // a WebSocket that does not open within this is given up
  backoffBaseMs: 250, // reconnect delays: random(0, min(max, base * 2^attempt)) ("full jitter")
  backoffMaxMs: 8000,
  sseAfterFailures: 3, // WebSocket attempts that never opened before trying SSE ("auto" only)
  unsubscribeLingerMs: 1000, // keep the wire subscription this long after its last listener leaves
  persist: true, // keep offsets and text in sessionStorage
  storage: null, // a Storage-like object; sessionStorage by default
  persistDelayMs: 200,
};

/** Open a client. `url`: the hub's WebSocket URL ("/ws", "wss://host/ws") or its HTTP base URL. */
export function connect(url, options = {}) {
  return new ResumableClient(url, options);
}

let shared = null;
/** One client per page, created on first use (what the React hooks use without a `client` option). */
export function defaultClient(url, options) {
  if (!shared || shared.state === "closed") shared = connect(url, options);
  return shared;
}

/** Split a stream id into URL path segments: the id may hold "/", each part is escaped. */
export function streamPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

function resolveUrls(url, httpUrl) {
  const here = globalThis.location ? globalThis.location.href : "http://127.0.0.1/";
  const u = new URL(url || "/ws", here);
  const secure = u.protocol === "https:" || u.protocol === "wss:";
  let base = u.pathname.replace(/\/+$/, "");
  let wsPath;
  if (u.protocol === "ws:" || u.protocol === "wss:" || base.endsWith("/ws")) {
    wsPath = u.pathname;
    base = base.replace(/\/ws$/, "");
  } else {
    wsPath = `${base}/ws`;
  }
  const ws = new URL(u.href);
  ws.protocol = secure ? "wss:" : "ws:";
  ws.pathname = wsPath;
  const http = httpUrl ? new URL(httpUrl, here) : new URL(u.href);
  if (!httpUrl) {
    http.protocol = secure ? "https:" : "http:";
    http.pathname = base || "/";
    http.search = "";
  }
  return { ws: ws.href, http: http.href.replace(/\/+$/, "") };
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null; // some sandboxed iframes throw on access
  }
}

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** What the client holds for one stream. `chunks[i]` is the chunk at offset `base + i`. */
class StreamState {
  constructor(id, base) {
    this.id = id;
    this.base = base;
    this.next = base;
    this.epoch = null;
    this.chunks = [];
    this.text = "";
    this.status = "connecting"; // connecting | streaming | done | error | cancelled
    this.error = null;
    this.code = null;
    this.ended = false; // end seen, or failed for good: never resubscribed
    this.listeners = new Set();
    this.active = false; // wanted on the wire
    this.pending = 0; // subscribes sent and not answered yet (frames meanwhile may be stale)
    this.startNow = false; // subscribe from "now": base is learnt from the answer
    this.version = 0;
    this.snap = null;
    this.linger = null;
    this.es = null; // SSE mode: this stream's EventSource
    this.sseGen = 0;
    this.sseAttempt = 0;
    this.sseTimer = null;
    this.retryTimer = null;
  }
}

export class ResumableClient {
  constructor(url, options = {}) {
    this.options = { ...DEFAULTS, ...options };
    const urls = resolveUrls(url, this.options.httpUrl);
    this.wsUrl = urls.ws;
    this.httpUrl = urls.http;
    this.storage = this.options.persist ? this.options.storage || defaultStorage() : null;
    this.state = "connecting";
    this.transport =
      this.options.transport === "sse" || typeof globalThis.WebSocket !== "function" ? "sse" : "ws";
    this.streams = new Map();
    this.stats = {
      connects: 0, // WebSocket connections opened
      reconnects: 0, // ... after the first
      duplicatesDropped: 0, // chunks received twice and not shown twice
      gaps: 0, // frames that skipped ahead: resubscribed instead
      resets: 0,
      fallbacks: 0, // switches from WebSocket to SSE
      deadConnections: 0, // connections dropped for a missing pong
    };
    this._stateListeners = new Set();
    this._errorListeners = new Set();
    this._ws = null;
    this._wsFailures = 0;
    this._attempt = 0;
    this._everOpen = false;
    this._reconnectTimer = null;
    this._connectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._persistTimer = null;
    this._dirty = new Set();
    this._probeTimer = null;
    this._probing = false;
    this._opening = false;
    this._watches = new Map(); // chat id -> {listeners: Set, snapshot, pending}
    this.watchSupported = true; // false once the hub answered "watch" with unknown_op

    if (typeof globalThis.addEventListener === "function") {
      this._onOnline = () => this._kick();
      this._onOffline = () => this._offline();
      this._onHide = () => this.flush();
      globalThis.addEventListener("online", this._onOnline);
      globalThis.addEventListener("offline", this._onOffline);
      globalThis.addEventListener("pagehide", this._onHide);
      globalThis.addEventListener("beforeunload", this._onHide);
    }
    if (this.transport === "sse") this._startSse();
    else this._open();
  }

  // --- public API ----------------------------------------------------------------------------

  /**
   * Follow a stream. `from`: the first offset wanted (default: resume from what this client or this
   * tab's sessionStorage holds, else 0; "now" = live only). Callbacks: onChunk(data, offset) once per
   * chunk in order, onEnd(status, error), onError({code, message}), onReset({epoch}) when the app
   * must drop what it showed, onUpdate(snapshot) after every change. Returns a handle with the
   * stream's current snapshot fields, `unsubscribe()` and `cancel()`.
   */
  subscribe(streamId, { from, onChunk, onEnd, onError, onReset, onUpdate } = {}) {
    if (typeof streamId !== "string" || !streamId) throw new TypeError("subscribe: a stream id is required");
    if (this.state === "closed") throw new Error("subscribe: the client is closed");
    const wanted = from === undefined || from === "now" ? from : Math.max(0, Math.floor(from));
    let s = this.streams.get(streamId);
    if (!s) s = this._restore(streamId, wanted);
    else if (typeof wanted === "number" && (wanted < s.base || wanted > s.next)) {
      // not what we hold: start over at the offset the app asked for
      this._release(s);
      s = new StreamState(streamId, wanted);
      this.streams.set(streamId, s);
    }
    const start = typeof wanted === "number" ? wanted : wanted === "now" ? s.next : s.base;
    const listener = { onChunk, onEnd, onError, onReset, onUpdate, next: start, endSeen: false, errorSeen: false };
    s.listeners.add(listener);
    clearTimeout(s.linger);
    s.linger = null;
    if (!s.active && !s.ended) {
      s.active = true;
      if (wanted === "now" && s.next === s.base && !s.chunks.length) s.startNow = true;
      this._wire(s);
    }
    // what is already held is delivered after the caller has its handle, before any new frame
    queueMicrotask(() => this._drain(s, listener));
    const client = this;
    return {
      stream: streamId,
      get text() { return s.text; },
      get chunks() { return s.chunks; },
      get offset() { return s.next; },
      get status() { return s.status; },
      get error() { return s.error; },
      get epoch() { return s.epoch; },
      snapshot: () => client._snapshot(s),
      cancel: () => client.cancel(streamId),
      unsubscribe: () => client._unlisten(s, listener),
    };
  }

  /** What the client holds for a stream (memory, else this tab's sessionStorage), or null. */
  getStream(streamId) {
    const s = this.streams.get(streamId) || this._load(streamId);
    return s ? this._snapshot(s) : null;
  }

  /**
   * Follow the list of a chat's streams (the hub's "watch" op, WebSocket only): onSnapshot(streams)
   * after every (re)connect, then onEvent({event: "created" | "ended" | "deleted", stream, ...}) as
   * any device starts, finishes or deletes an answer. onUnsupported() when this cannot work (SSE
   * mode, or a hub without "watch"): poll GET /chats/{id} instead. Returns `off`.
   */
  watchChat(chatId, { onSnapshot, onEvent, onUnsupported } = {}) {
    let w = this._watches.get(chatId);
    if (!w) {
      w = { listeners: new Set(), snapshot: null, pending: 0 };
      this._watches.set(chatId, w);
    }
    const listener = { onSnapshot, onEvent, onUnsupported };
    w.listeners.add(listener);
    if (this.transport !== "ws" || !this.watchSupported) {
      queueMicrotask(() => w.listeners.has(listener) && onUnsupported?.());
    } else if (w.listeners.size === 1) {
      if (this._ws && this._ws.readyState === 1) this._sendWatch(chatId, w);
    } else if (w.snapshot) {
      const snap = w.snapshot;
      queueMicrotask(() => w.listeners.has(listener) && onSnapshot?.(snap));
    }
    return () => {
      if (!w.listeners.delete(listener) || w.listeners.size) return;
      this._watches.delete(chatId);
      if (this.transport === "ws" && this._ws && this._ws.readyState === 1 && this.watchSupported) {
        this._send({ op: "unwatch", chat: chatId });
      }
    };
  }

  /** Ask the stream's producer to stop. Over WebSocket when live, else POST /streams/{id}/cancel. */
  async cancel(streamId) {
    if (this.transport === "ws" && this._ws && this._ws.readyState === 1) {
      this._send({ op: "cancel", stream: streamId });
      return { stream: streamId, cancel_requested: true };
    }
    return this.fetchJson(`/streams/${streamPath(streamId)}/cancel`, { method: "POST" });
  }

  /** Listen to connection state changes; called at once with the current state. Returns `off`. */
  onState(fn) {
    this._stateListeners.add(fn);
    fn(this.state, this.transport);
    return () => this._stateListeners.delete(fn);
  }

  /** Errors that belong to no stream (a refused token, a malformed frame). Returns `off`. */
  onError(fn) {
    this._errorListeners.add(fn);
    return () => this._errorListeners.delete(fn);
  }

  /** Write every stream's position to sessionStorage now (also done on pagehide). */
  flush() {
    clearTimeout(this._persistTimer);
    this._persistTimer = null;
    for (const s of this._dirty) this._persist(s);
    this._dirty.clear();
  }

  /** Forget a stream's saved position in this tab (the memory copy stays while subscribed). */
  forget(streamId) {
    if (this.storage) {
      try {
        this.storage.removeItem(STORE_PREFIX + streamId);
      } catch {
        /* storage unavailable */
      }
    }
  }

  close() {
    if (this.state === "closed") return;
    this.flush();
    for (const s of this.streams.values()) this._release(s);
    this._closeWs();
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._probeTimer);
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this._onOnline);
      globalThis.removeEventListener("offline", this._onOffline);
      globalThis.removeEventListener("pagehide", this._onHide);
      globalThis.removeEventListener("beforeunload", this._onHide);
    }
    this._setState("closed");
  }

  /** GET/POST a JSON endpoint of the hub with the client's token; throws HttpError on failure. */
  async fetchJson(path, init = {}) {
    const token = await this._token();
    const headers = { ...(init.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (init.body !== undefined && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
    const r = await fetch(this.httpUrl + path, { ...init, headers, cache: "no-store" });
    const body = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) {
      const e = body && body.error ? body.error : { code: `http_${r.status}`, message: r.statusText };
      throw new HttpError(r.status, e.code, e.message);
    }
    return body;
  }

  // --- stream state ----------------------------------------------------------------------------

  _restore(id, wanted) {
    let s = wanted === undefined ? this._load(id) : null;
    if (!s && typeof wanted === "number") {
      const saved = this._load(id);
      // a saved copy that covers the wanted offset saves a replay
      if (saved && saved.base <= wanted && wanted <= saved.next) s = saved;
    }
    if (!s) s = new StreamState(id, typeof wanted === "number" ? wanted : 0);
    this.streams.set(id, s);
    return s;
  }

  _load(id) {
    if (!this.storage) return null;
    try {
      const raw = this.storage.getItem(STORE_PREFIX + id);
      if (!raw) return null;
      const r = JSON.parse(raw);
      if (!Array.isArray(r.c) || typeof r.b !== "number" || r.b + r.c.length !== r.o) return null;
      const s = new StreamState(id, r.b);
      s.chunks = r.c.map(String);
      s.text = s.chunks.join("");
      s.next = r.o;
      s.epoch = r.e || null;
      if (r.s) {
        s.status = r.s;
        s.error = r.err || null;
        s.ended = true;
      }
      return s;
    } catch {
      return null;
    }
  }

  _persist(s) {
    if (!this.storage || s.startNow || this.streams.get(s.id) !== s) return;
    const rec = { b: s.base, o: s.next, e: s.epoch, c: s.chunks };
    if (s.ended && s.code === null) {
      // how the stream ended; a failure to read it (s.code) is worth retrying after a reload
      rec.s = s.status;
      if (s.error) rec.err = s.error;
    }
    const key = STORE_PREFIX + s.id;
    const value = JSON.stringify(rec);
    try {
      this.storage.setItem(key, value);
      return;
    } catch {
      this._evict(); // full: make room from streams this page no longer follows, then try once more
    }
    try {
      this.storage.setItem(key, value);
    } catch {
      // still no room: better no copy (a replay from 0) than one that does not match its offset
      try {
        this.storage.removeItem(key);
      } catch {
        /* unavailable */
      }
    }
  }

  _evict() {
    try {
      const stale = [];
      for (let i = 0; i < this.storage.length; i++) {
        const key = this.storage.key(i);
        if (!key || !key.startsWith(STORE_PREFIX)) continue;
        const s = this.streams.get(key.slice(STORE_PREFIX.length));
        if (!s || !s.active) stale.push(key);
      }
      for (const key of stale) this.storage.removeItem(key);
    } catch {
      /* unavailable */
    }
  }

  _touch(s) {
    s.version++;
    s.snap = null;
    if (this.storage) {
      this._dirty.add(s);
      if (!this._persistTimer) {
        this._persistTimer = setTimeout(() => this.flush(), this.options.persistDelayMs);
      }
    }
  }

  _snapshot(s) {
    if (!s.snap) {
      s.snap = Object.freeze({
        stream: s.id,
        text: s.text,
        chunks: Object.freeze(s.chunks.slice()),
        offset: s.next,
        base: s.base,
        epoch: s.epoch,
        status: s.status,
        error: s.error,
        code: s.code,
        version: s.version,
      });
    }
    return s.snap;
  }

  /** Bring every listener up to date: chunks it has not seen, then the end or the error. */
  _notify(s) {
    for (const l of [...s.listeners]) this._drain(s, l);
  }

  _drain(s, l) {
    if (!s.listeners.has(l)) return;
    const upTo = s.next;
    while (l.next < upTo) {
      const off = l.next++;
      if (l.onChunk) this._call(l.onChunk, s.chunks[off - s.base], off);
    }
    if (l.onUpdate) this._call(l.onUpdate, this._snapshot(s));
    if (s.ended && !l.endSeen && s.code === null) {
      l.endSeen = true;
      if (l.onEnd) this._call(l.onEnd, s.status, s.error);
    }
    if (s.code !== null && !l.errorSeen) {
      l.errorSeen = true;
      if (l.onError) this._call(l.onError, { code: s.code, message: s.error });
    }
  }

  _call(fn, ...args) {
    try {
      fn(...args);
    } catch (e) {
      setTimeout(() => {
        throw e; // an app callback's error must not break delivery to the others
      });
    }
  }

  _unlisten(s, l) {
    if (!s.listeners.delete(l) || s.listeners.size) return;
    clearTimeout(s.linger);
    s.linger = setTimeout(() => {
      s.linger = null;
      if (!s.listeners.size) this._deactivate(s);
    }, this.options.unsubscribeLingerMs);
  }

  _deactivate(s) {
    if (!s.active) return;
    s.active = false;
    this._unwire(s);
    this.flush();
  }

  _release(s) {
    clearTimeout(s.linger);
    clearTimeout(s.retryTimer);
    s.listeners.clear();
    this._deactivate(s);
  }

  /** Frames from either transport end up here. */
  _onChunks(s, offset, data) {
    if (s.ended || !s.active || !Array.isArray(data)) return;
    if (s.startNow) return; // nothing can precede the answer that tells us where "now" is
    const end = offset + data.length;
    if (end <= s.next) {
      this.stats.duplicatesDropped += data.length;
      return;
    }
    if (offset > s.next) {
      // stale frames of a replaced subscription may skip ahead; the new one starts at `next`
      if (s.pending > 0) return;
      this.stats.gaps++;
      this._resubscribe(s);
      return;
    }
    if (offset < s.next) {
      this.stats.duplicatesDropped += s.next - offset;
      data = data.slice(s.next - offset);
    }
    for (const d of data) {
      s.chunks.push(d);
      s.text += d;
    }
    s.next = end;
    if (s.status === "connecting") s.status = "streaming";
    this._touch(s);
    this._notify(s);
  }

  _onEnd(s, offset, status, error) {
    if (s.ended || !s.active) return;
    if (offset > s.next) {
      if (s.pending > 0) return;
      this.stats.gaps++;
      this._resubscribe(s);
      return;
    }
    s.ended = true;
    s.status = status || "done";
    s.error = error || null;
    this._touch(s);
    this.flush();
    this._notify(s);
    this._unwire(s); // frees the hub's subscription slot
    s.active = false;
  }

  _onReset(s, epoch) {
    this.stats.resets++;
    s.base = 0;
    s.next = 0;
    s.chunks = [];
    s.text = "";
    s.epoch = epoch;
    s.ended = false;
    s.status = "connecting";
    s.error = null;
    s.code = null;
    this._touch(s);
    for (const l of [...s.listeners]) {
      l.next = 0;
      l.endSeen = false;
      if (l.onReset) this._call(l.onReset, { stream: s.id, epoch });
    }
    this._notify(s);
  }

  _onStreamError(s, code, message) {
    if (code === "offset_out_of_range") {
      // we hold more than the hub has: the stream was recreated or lost its tail; start over
      this._onReset(s, null);
      this._resubscribe(s);
      return;
    }
    if (!TERMINAL_CODES.has(code)) {
      clearTimeout(s.retryTimer);
      s.retryTimer = setTimeout(() => this._resubscribe(s), this._delay(2));
      return;
    }
    s.ended = true;
    s.active = false;
    s.status = "error";
    s.error = message;
    s.code = code;
    this._touch(s);
    this._notify(s);
  }

  // --- wire: either transport ---------------------------------------------------------------

  _wire(s) {
    if (this.transport === "sse") this._sseOpen(s);
    else if (this._ws && this._ws.readyState === 1) this._sendSubscribe(s);
    // otherwise the next open subscribes every active stream
  }

  _unwire(s) {
    if (this.transport === "sse") this._sseClose(s);
    else if (this._ws && this._ws.readyState === 1) this._send({ op: "unsubscribe", stream: s.id });
    s.pending = 0;
  }

  _resubscribe(s) {
    if (!s.active || s.ended) return;
    if (this.transport === "sse") {
      this._sseClose(s);
      this._sseOpen(s);
    } else if (this._ws && this._ws.readyState === 1) {
      this._sendSubscribe(s);
    }
  }

  // --- WebSocket -------------------------------------------------------------------------------

  async _open() {
    if (this.state === "closed" || this.transport !== "ws" || this._opening || this._ws) return;
    this._setState(this._everOpen ? "reconnecting" : "connecting");
    let url = this.wsUrl;
    let ws;
    this._opening = true; // an async token function must not let a second open start meanwhile
    try {
      const token = await this._token();
      if (this.state === "closed" || this.transport !== "ws") return;
      if (token) url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
      ws = new WebSocket(url);
    } catch {
      this._wsFailures++;
      this._scheduleReconnect();
      return;
    } finally {
      this._opening = false;
    }
    this._ws = ws;
    let opened = false;
    this._connectTimer = setTimeout(() => {
      if (this._ws === ws && !opened) this._dropWs(ws, false);
    }, this.options.connectTimeoutMs);
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      clearTimeout(this._connectTimer);
      this._wsFailures = 0;
      this._attempt = 0;
      this.stats.connects++;
      if (this._everOpen) this.stats.reconnects++;
      this._everOpen = true;
      this._setState("live");
      this._ping();
      for (const s of this.streams.values()) {
        if (s.active && !s.ended) this._sendSubscribe(s);
      }
      if (this.watchSupported) {
        for (const [chatId, w] of this._watches) this._sendWatch(chatId, w);
      }
    };
    ws.onmessage = (e) => {
      if (this._ws !== ws) return;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      this._onFrame(m);
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      if (e.code === FATAL_CLOSE) {
        this._detachWs();
        this._emitError({ code: "unauthorized", message: e.reason || "the hub refused the token" });
        this.close();
        return;
      }
      this._dropWs(ws, opened);
    };
    ws.onerror = () => {}; // onclose follows with the details we act on
  }

  _sendSubscribe(s) {
    const msg = { op: "subscribe", stream: s.id, from: s.startNow ? "now" : s.next };
    if (s.epoch && !s.startNow) msg.epoch = s.epoch;
    s.pending++;
    this._send(msg);
  }

  _sendWatch(chatId, w) {
    w.pending++;
    this._send({ op: "watch", chat: chatId });
  }

  _watchUnsupported() {
    this.watchSupported = false;
    for (const w of this._watches.values()) {
      w.pending = 0;
      for (const l of [...w.listeners]) if (l.onUnsupported) this._call(l.onUnsupported);
    }
  }

  _send(msg) {
    try {
      this._ws.send(JSON.stringify(msg));
    } catch {
      /* closing: the reconnect resends what matters */
    }
  }

  _onFrame(m) {
    const s = m.stream !== undefined ? this.streams.get(m.stream) : undefined;
    switch (m.op) {
      case "chunks":
        if (s) this._onChunks(s, m.offset, m.data);
        break;
      case "end":
        if (s) this._onEnd(s, m.offset, m.status, m.error);
        break;
      case "subscribed":
        if (!s) break;
        s.pending = Math.max(0, s.pending - 1);
        s.epoch = m.epoch;
        if (s.startNow) {
          s.startNow = false;
          s.base = s.next = m.offset;
          for (const l of s.listeners) l.next = m.offset;
        }
        if (s.status === "connecting" && !s.ended) s.status = "streaming";
        this._touch(s);
        this._notify(s);
        break;
      case "reset":
        if (s) this._onReset(s, m.epoch);
        break;
      case "pong":
        this._pong();
        break;
      case "chat": {
        const w = this._watches.get(m.chat);
        if (!w) break;
        w.pending = Math.max(0, w.pending - 1);
        w.snapshot = m.streams;
        for (const l of [...w.listeners]) if (l.onSnapshot) this._call(l.onSnapshot, m.streams);
        break;
      }
      case "chat_event": {
        const w = this._watches.get(m.chat);
        if (w) for (const l of [...w.listeners]) if (l.onEvent) this._call(l.onEvent, m);
        break;
      }
      case "error":
        if (s && s.pending > 0) {
          s.pending--;
          this._onStreamError(s, m.code, m.message);
        } else if (!m.stream && m.code === "unknown_op" && [...this._watches.values()].some((w) => w.pending)) {
          this._watchUnsupported(); // a hub that predates "watch"
        } else {
          this._emitError({ code: m.code, message: m.message, stream: m.stream });
        }
        break;
      default: // unsubscribed, ack, and "cancel" (meant for producers)
        break;
    }
  }

  _ping() {
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return;
    this._send({ op: "ping", t: Date.now() });
    this._pongTimer = setTimeout(() => {
      if (this._ws !== ws) return;
      this.stats.deadConnections++;
      this._dropWs(ws, true);
    }, this.options.heartbeatTimeoutMs);
  }

  _pong() {
    if (this._ws && this._ws.readyState === 1) this._setState("live"); // e.g. after an "offline" scare
    clearTimeout(this._pongTimer);
    clearTimeout(this._pingTimer);
    this._pingTimer = setTimeout(() => this._ping(), this.options.heartbeatMs);
  }

  _detachWs() {
    const ws = this._ws;
    this._ws = null;
    clearTimeout(this._connectTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
    for (const s of this.streams.values()) s.pending = 0;
    for (const w of this._watches.values()) w.pending = 0;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
  }

  _dropWs(ws, opened) {
    if (this._ws !== ws) return;
    this._detachWs();
    if (!opened) this._wsFailures++;
    this._scheduleReconnect();
  }

  _closeWs() {
    this._detachWs();
  }

  _scheduleReconnect() {
    if (this.state === "closed") return;
    clearTimeout(this._reconnectTimer);
    this._setState("reconnecting");
    if (
      this.options.transport === "auto" &&
      this._wsFailures >= this.options.sseAfterFailures &&
      !this._probing &&
      globalThis.navigator?.onLine !== false
    ) {
      this._probing = true;
      // WebSocket keeps failing: if plain HTTP reaches the hub, something blocks upgrades
      this.fetchJson("/healthz")
        .then(() => {
          this._probing = false;
    this._opening = false;
    this._watches = new Map(); // chat id -> {listeners: Set, snapshot, pending}
    this.watchSupported = true; // false once the hub answered "watch" with unknown_op
          const open = this._ws && this._ws.readyState === 1;
          if (this.state !== "closed" && this.transport === "ws" && !open) this._fallBackToSse();
        })
        .catch(() => {
          this._probing = false;
    this._opening = false;
    this._watches = new Map(); // chat id -> {listeners: Set, snapshot, pending}
    this.watchSupported = true; // false once the hub answered "watch" with unknown_op
        });
    }
    const delay = this._delay(this._attempt++);
    this._reconnectTimer = setTimeout(() => this._open(), delay);
  }

  _delay(attempt) {
    const o = this.options;
    return Math.random() * Math.min(o.backoffMaxMs, o.backoffBaseMs * 2 ** Math.min(attempt, 20));
  }

  /** The network came back: try now instead of waiting for the backoff. */
  _kick() {
    if (this.state === "closed") return;
    this._attempt = 0;
    if (this.transport === "ws") {
      if (this._ws && this._ws.readyState === 1) this._ping(); // is this connection still alive?
      else if (!this._ws && !this._opening) {
        clearTimeout(this._reconnectTimer);
        this._open();
      }
    } else {
      for (const s of this.streams.values()) {
        if (s.active && !s.ended && !s.es) {
          clearTimeout(s.sseTimer);
          s.sseAttempt = 0;
          this._sseOpen(s);
        }
      }
      this._sseHealth();
    }
  }

  _offline() {
    if (this.state === "closed") return;
    if (this.transport === "ws" && this._ws && this._ws.readyState === 1) this._ping();
    this._setState("reconnecting");
  }

  _fallBackToSse() {
    this.stats.fallbacks++;
    clearTimeout(this._reconnectTimer);
    this._detachWs();
    this.transport = "sse";
    for (const w of this._watches.values()) {
      for (const l of [...w.listeners]) if (l.onUnsupported) this._call(l.onUnsupported);
    }
    this._startSse();
  }

  // --- Server-Sent Events ------------------------------------------------------------------------

  _startSse() {
    this._setState(this._everOpen ? "reconnecting" : "connecting");
    for (const s of this.streams.values()) {
      if (s.active && !s.ended) this._sseOpen(s);
    }
    this._sseProbe();
  }

  /** SSE has no connection of its own: "live" means the hub answers HTTP and no stream is retrying. */
  _sseProbe() {
    clearTimeout(this._probeTimer);
    if (this.state === "closed") return;
    this.fetchJson("/healthz")
      .then(() => {
        this._attempt = 0;
        this._everOpen = true;
        this._sseHealth();
      })
      .catch(() => {
        this._setState("reconnecting");
        this._probeTimer = setTimeout(() => this._sseProbe(), this._delay(this._attempt++));
      });
  }

  _sseHealth() {
    if (this.state === "closed" || this.transport !== "sse" || !this._everOpen) return;
    let retrying = globalThis.navigator?.onLine === false;
    for (const s of this.streams.values()) {
      if (s.active && !s.ended && s.sseAttempt > 0) retrying = true;
    }
    this._setState(retrying ? "reconnecting" : "live");
  }

  async _sseOpen(s) {
    if (this.state === "closed" || !s.active || s.ended) return;
    const gen = ++s.sseGen;
    const path = `/streams/${streamPath(s.id)}`;
    let r;
    try {
      // one plain read first: it checks the epoch, catches up in one response, and ends a
      // finished stream without holding one of the browser's few HTTP connections open
      const from = s.startNow ? 0 : s.next;
      r = await this.fetchJson(`${path}?from=${from}&limit=${s.startNow ? 0 : 10000}`);
    } catch (e) {
      if (gen !== s.sseGen) return;
      if (e instanceof HttpError && e.code === "offset_out_of_range") {
        this._onReset(s, null);
        this._sseRetry(s, gen, 0);
      } else if (e instanceof HttpError && TERMINAL_CODES.has(e.code)) {
        this._onStreamError(s, e.code, e.message);
      } else {
        this._sseRetry(s, gen);
      }
      return;
    }
    if (gen !== s.sseGen || !s.active || s.ended) return;
    if (s.startNow) {
      s.startNow = false;
      s.base = s.next = r.end;
      for (const l of s.listeners) l.next = r.end;
    } else if (s.epoch && r.epoch !== s.epoch) {
      this._onReset(s, r.epoch);
      this._sseRetry(s, gen, 0);
      return;
    }
    s.epoch = r.epoch;
    if (s.status === "connecting" && !s.ended) s.status = "streaming";
    this._touch(s);
    this._onChunks(s, r.offset, r.chunks);
    if (s.ended || !s.active) return;
    if (r.status !== "open" && s.next >= r.end) {
      this._sseOk(s);
      this._onEnd(s, r.end, r.status, r.error);
      return;
    }
    if (r.next < r.end) {
      this._sseRetry(s, gen, 0); // more than one read's worth: read on
      return;
    }
    this._notify(s);
    const token = await this._token();
    if (gen !== s.sseGen || !s.active || s.ended) return;
    let url = `${this.httpUrl}${path}/sse?from=${s.next}`;
    if (token) url += `&token=${encodeURIComponent(token)}`;
    const es = new EventSource(url);
    s.es = es;
    es.onopen = () => this._sseOk(s);
    es.onmessage = (e) => {
      if (s.es !== es) return;
      this._sseOk(s);
      const m = JSON.parse(e.data);
      this._onChunks(s, m.offset, m.data);
    };
    es.addEventListener("end", (e) => {
      if (s.es !== es) return;
      const m = JSON.parse(e.data);
      this._sseClose(s);
      this._onEnd(s, m.offset, m.status, m.error);
    });
    es.addEventListener("stream-error", (e) => {
      if (s.es !== es) return;
      const m = JSON.parse(e.data);
      this._sseClose(s);
      this._onStreamError(s, m.code, m.message);
    });
    es.onerror = () => {
      // our own retry, not EventSource's: it re-checks the epoch and uses our backoff
      if (s.es !== es) return;
      this._sseClose(s);
      this._sseRetry(s, s.sseGen);
    };
  }

  _sseOk(s) {
    if (s.sseAttempt) {
      s.sseAttempt = 0;
      this._sseHealth();
    }
  }

  _sseRetry(s, gen, delay) {
    if (gen !== s.sseGen || !s.active || s.ended) return;
    clearTimeout(s.sseTimer);
    if (delay === undefined) {
      delay = this._delay(s.sseAttempt++);
      this._setState("reconnecting");
    }
    s.sseTimer = setTimeout(() => this._sseOpen(s), delay);
  }

  _sseClose(s) {
    s.sseGen++;
    clearTimeout(s.sseTimer);
    if (s.es) {
      s.es.onopen = s.es.onmessage = s.es.onerror = null;
      s.es.close();
      s.es = null;
    }
  }

  // --- misc ---------------------------------------------------------------------------------

  async _token() {
    const t = this.options.token;
    return typeof t === "function" ? await t() : t;
  }

  _setState(state) {
    if (this.state === state || (this.state === "closed" && state !== "closed")) return;
    this.state = state;
    for (const fn of [...this._stateListeners]) this._call(fn, state, this.transport);
  }

  _emitError(err) {
    for (const fn of [...this._errorListeners]) this._call(fn, err);
  }
}
