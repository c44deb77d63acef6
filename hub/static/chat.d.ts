// Types of chat.js: a chat as a list of streams, one per assistant answer.
import type { ResumableClient, StreamStatus } from "./resumable.js";

export interface ChatMessage {
  stream: string;
  prompt: string | null;
  text: string;
  chunks: readonly string[];
  status: StreamStatus;
  error: string | null;
  offset: number;
}

export interface ChatOptions {
  /** Where ask() POSTs {chat, prompt}: a path on the hub, or an absolute URL (your backend). */
  askPath?: string;
  rate?: number | null;
  pollMs?: number;
}

export declare class Chat {
  constructor(client: ResumableClient, chatId: string, options?: ChatOptions);
  readonly chatId: string;
  readonly messages: ChatMessage[];
  readonly status: "loading" | "idle" | "streaming" | "error";
  readonly error: string | null;
  readonly ready: Promise<void>;
  onChange(fn: () => void): () => void;
  /** Start an answer; returns the new stream's id. */
  ask(prompt: string): Promise<string>;
  stop(): Promise<unknown[]>;
  refresh(): Promise<void>;
  close(): void;
}

export declare function openChat(client: ResumableClient, chatId: string, options?: ChatOptions): Chat;
/** A chat id for a new conversation: 12 URL-safe characters. */
export declare function newChatId(): string;
export declare function isStreaming(status: string): boolean;
