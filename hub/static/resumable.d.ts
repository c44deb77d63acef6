// Types of resumable.js (the browser client of resumable-hub). Hand-written beside the module,
// which stays a plain ES module the hub serves as is; tests/browser/test_npm_package.py checks both.

export type StreamStatus = "connecting" | "streaming" | "done" | "error" | "cancelled";
export type ConnectionState = "connecting" | "live" | "reconnecting" | "closed";
export type Transport = "auto" | "ws" | "sse";
export type TokenSource = string | null | (() => string | null | Promise<string | null>);

export interface ClientOptions {
  /** A token, or a function returning one (or a Promise of one), asked before each connect. */
  token?: TokenSource;
  transport?: Transport;
  /** Base URL of the hub's HTTP API; derived from the WebSocket URL when null. */
  httpUrl?: string | null;
  heartbeatMs?: number;
  heartbeatTimeoutMs?: number;
  connectTimeoutMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  sseAfterFailures?: number;
  unsubscribeLingerMs?: number;
  persist?: boolean;
  storage?: Pick<Storage, "getItem" | "setItem" | "removeItem" | "key" | "length"> | null;
  persistDelayMs?: number;
}

export interface StreamError {
  code: string;
  message: string;
}

export interface StreamSnapshot {
  readonly stream: string;
  readonly text: string;
  readonly chunks: readonly string[];
  readonly offset: number;
  readonly base: number;
  readonly epoch: string | null;
  readonly status: StreamStatus;
  readonly error: string | null;
  readonly code: string | null;
  readonly version: number;
}

export interface SubscribeOptions {
  /** The offset to start from (default: where the client's saved state ends, else 0), or "now". */
  from?: number | "now";
  onChunk?: (data: string, offset: number) => void;
  onEnd?: (status: "done" | "error" | "cancelled", error: string | null) => void;
  onError?: (error: StreamError) => void;
  onReset?: (info: { epoch: string }) => void;
  onUpdate?: (snapshot: StreamSnapshot) => void;
}

export interface Subscription {
  readonly stream: string;
  readonly text: string;
  readonly chunks: readonly string[];
  readonly offset: number;
  readonly status: StreamStatus;
  readonly error: string | null;
  readonly epoch: string | null;
  snapshot(): StreamSnapshot;
  cancel(): Promise<unknown>;
  unsubscribe(): void;
}

export interface ChatStreamInfo {
  stream: string;
  status: string;
  next: number;
  created: number;
  closed?: number | null;
  error?: string | null;
  labels?: Record<string, string>;
}

export interface ChatEvent {
  chat: string;
  event: "created" | "ended" | "deleted";
  stream: string;
  status?: string;
  next?: number;
  error?: string;
  labels?: Record<string, string>;
}

export interface WatchOptions {
  onSnapshot?: (streams: ChatStreamInfo[]) => void;
  onEvent?: (event: ChatEvent) => void;
  onUnsupported?: () => void;
}

export declare class HttpError extends Error {
  status: number;
  code: string;
}

export declare class ResumableClient {
  constructor(url: string, options?: ClientOptions);
  readonly state: ConnectionState;
  readonly transport: Transport;
  readonly httpUrl: string;
  subscribe(streamId: string, options?: SubscribeOptions): Subscription;
  getStream(streamId: string): StreamSnapshot | null;
  watchChat(chatId: string, options?: WatchOptions): () => void;
  cancel(streamId: string): Promise<unknown>;
  /** Called at once with the current state; returns `off`. */
  onState(fn: (state: ConnectionState, transport: Transport) => void): () => void;
  onError(fn: (error: StreamError & { stream?: string }) => void): () => void;
  flush(): void;
  forget(streamId: string): void;
  close(): void;
  /** GET/POST a JSON endpoint of the hub with the client's token; throws HttpError on failure. */
  fetchJson<T = unknown>(path: string, init?: RequestInit): Promise<T>;
}

/** Open a client. `url`: the hub's WebSocket URL ("/ws", "wss://host/ws") or its HTTP base URL. */
export declare function connect(url: string, options?: ClientOptions): ResumableClient;
/** One client per page, created on first use (what the React hooks use without a `client` option). */
export declare function defaultClient(url?: string, options?: ClientOptions): ResumableClient;
export declare function streamPath(id: string): string;
