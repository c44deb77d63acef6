// Types of react.js: React hooks over resumable.js and chat.js. React is passed in (createHooks),
// so these types need only the hooks they use, not @types/react.
import type { ChatMessage } from "./chat.js";
import type { ConnectionState, ResumableClient, StreamError, StreamStatus, SubscribeOptions } from "./resumable.js";

export interface ReactLike {
  useState: (...args: any[]) => any;
  useEffect: (...args: any[]) => any;
  useRef: (...args: any[]) => any;
  useCallback: (...args: any[]) => any;
}

export interface StreamOptions extends Omit<SubscribeOptions, "onUpdate"> {
  client?: ResumableClient;
}

export interface StreamState {
  text: string;
  chunks: readonly string[];
  status: "idle" | StreamStatus;
  offset: number;
  error: string | null;
  cancel(): Promise<unknown>;
}

export interface ChatHookOptions {
  chatId?: string;
  client?: ResumableClient;
  askPath?: string;
  rate?: number;
  pollMs?: number;
}

export interface ChatState {
  messages: ChatMessage[];
  ask(prompt: string): Promise<string>;
  stop(): Promise<unknown>;
  status: "loading" | "idle" | "streaming" | "error";
  error: string | StreamError | null;
  connection: ConnectionState;
}

export interface Hooks {
  useResumableStream(streamId: string | null | undefined, options?: StreamOptions): StreamState;
  useResumableChat(options?: ChatHookOptions): ChatState;
  useConnectionState(client?: ResumableClient): ConnectionState;
}

export declare function createHooks(
  React: ReactLike,
  options?: { client?: ResumableClient | (() => ResumableClient) },
): Hooks;
export declare const useResumableStream: Hooks["useResumableStream"];
export declare const useResumableChat: Hooks["useResumableChat"];
export declare const useConnectionState: Hooks["useConnectionState"];
