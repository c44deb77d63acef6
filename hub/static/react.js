/**
 * react.js: React hooks over resumable.js and chat.js. An ES module, no build step; React comes from
 * the page, never from an import here, so one file serves a bundler app and a <script>-tag page.
 *
 *   import * as React from "react";
 *   import { createHooks } from "./resumable-hub/react.js";
 *   export const { useResumableStream, useResumableChat, useConnectionState } = createHooks(React);
 *
 *   const { text, status, cancel } = useResumableStream(streamId);
 *   const { messages, ask, stop, status } = useResumableChat({ chatId });
 *
 * Without createHooks, the named exports use `globalThis.React` (a page that loads React's UMD build).
 * Every hook takes a `client` option; without one they share `defaultClient()` (same-origin /ws).
 * Server rendering (Next.js) is safe: without a window no client is made, nothing connects, and
 * the hooks return their initial values until the browser takes over.
 */

import { openChat } from "./chat.js";
import { defaultClient } from "./resumable.js";

const NO_CHUNKS = Object.freeze([]);

export function createHooks(React, { client: appClient } = {}) {
  if (!React || typeof React.useState !== "function") {
    throw new TypeError("createHooks(React): pass the React module (import * as React from 'react')");
  }
  const { useState, useEffect, useRef, useCallback } = React;
  const browser = typeof window !== "undefined";
  const pick = (client) =>
    client ||
    (typeof appClient === "function" ? appClient() : appClient) ||
    (browser ? defaultClient() : null);

  /**
   * Follow one stream: {text, chunks, status, offset, error, cancel}. `status`: "idle" (no id),
   * "connecting", "streaming", "done", "error" or "cancelled". Options: client, from, and the
   * callbacks onChunk(data, offset), onEnd(status, error), onError({code, message}), onReset().
   */
  function useResumableStream(streamId, options = {}) {
    const client = pick(options.client);
    const [snap, setSnap] = useState(() => (client && streamId ? client.getStream(streamId) : null));
    const callbacks = useRef(options);
    callbacks.current = options;
    const from = options.from;
    useEffect(() => {
      if (!client || !streamId) return undefined;
      const sub = client.subscribe(streamId, {
        from,
        onChunk: (data, offset) => callbacks.current.onChunk?.(data, offset),
        onEnd: (status, error) => callbacks.current.onEnd?.(status, error),
        onError: (err) => callbacks.current.onError?.(err),
        onReset: (info) => callbacks.current.onReset?.(info),
        onUpdate: setSnap,
      });
      setSnap(sub.snapshot());
      return () => sub.unsubscribe();
    }, [client, streamId, from]);
    const cancel = useCallback(
      () => (client && streamId ? client.cancel(streamId) : Promise.resolve(null)),
      [client, streamId],
    );
    // right after the id changes, before the effect has run, show the new stream, not the old one
    const s = snap && snap.stream === streamId ? snap : client && streamId ? client.getStream(streamId) : null;
    return {
      text: s ? s.text : "",
      chunks: s ? s.chunks : NO_CHUNKS,
      status: !streamId ? "idle" : s ? s.status : "connecting",
      offset: s ? s.offset : 0,
      error: s ? s.error : null,
      cancel,
    };
  }

  /**
   * A chat: one stream per assistant answer, loaded from the hub and kept live.
   * Returns {messages, ask(prompt), stop(), status, error, connection}; each message is
   * {stream, prompt, text, chunks, status, error, offset}, oldest first. `status` is "loading",
   * "idle", "streaming" or "error". Options: chatId, client, askPath ("/demo/ask"), rate, pollMs.
   */
  function useResumableChat({ chatId, client: given, askPath, rate, pollMs } = {}) {
    const client = pick(given);
    const [state, setState] = useState({ messages: [], status: chatId ? "loading" : "idle", error: null });
    const chatRef = useRef(null);
    useEffect(() => {
      if (!client || !chatId) {
        if (!chatId) setState({ messages: [], status: "idle", error: null });
        return undefined;
      }
      const opts = {};
      if (askPath) opts.askPath = askPath;
      if (rate) opts.rate = rate;
      if (pollMs !== undefined) opts.pollMs = pollMs;
      const chat = openChat(client, chatId, opts);
      chatRef.current = chat;
      const show = (c) => setState({ messages: c.messages, status: c.status, error: c.error });
      show(chat);
      const off = chat.onChange(show);
      return () => {
        off();
        chat.close();
        if (chatRef.current === chat) chatRef.current = null;
      };
    }, [client, chatId, askPath, rate, pollMs]);
    const ask = useCallback((prompt) => {
      const chat = chatRef.current;
      return chat ? chat.ask(prompt) : Promise.reject(new Error("useResumableChat: no chatId"));
    }, []);
    const stop = useCallback(() => (chatRef.current ? chatRef.current.stop() : Promise.resolve([])), []);
    const connection = useConnectionState(client);
    return { ...state, ask, stop, connection };
  }

  /** The client's connection state: "connecting", "live", "reconnecting" or "closed". */
  function useConnectionState(given) {
    const client = pick(given);
    const [state, setState] = useState(client ? client.state : "connecting");
    useEffect(() => (client ? client.onState((s) => setState(s)) : undefined), [client]);
    return state;
  }

  return { useResumableStream, useResumableChat, useConnectionState };
}

let bound = null;
function globalHooks() {
  if (!bound) {
    if (!globalThis.React) throw new Error("react.js: no global React; use createHooks(React)");
    bound = createHooks(globalThis.React);
  }
  return bound;
}

export const useResumableStream = (streamId, options) => globalHooks().useResumableStream(streamId, options);
export const useResumableChat = (options) => globalHooks().useResumableChat(options);
export const useConnectionState = (client) => globalHooks().useConnectionState(client);
