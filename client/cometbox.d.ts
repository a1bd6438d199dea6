// Types for cometbox.js, the browser client for cometbox mailboxes (MIT).
// docs/client.md is the manual. Checked by tests/node/types (tsc --noEmit).
//
// Two ways to load it, both typed by this file:
//   <script src="/cometbox.js">       the global `cometbox` (a UMD global:
//                                     `/// <reference types="cometbox" />`)
//   import cometbox, { subscribe } from "cometbox"      (or "/cometbox.mjs")

export as namespace cometbox;

/** What `transport` may ask for; `"auto"` lets the client choose. */
export type Transport = "auto" | "sse" | "longpoll" | "websocket" | "jsonp";

/** The transport a subscription actually uses. */
export type ActiveTransport = Exclude<Transport, "auto">;

/** `"waiting"` is backing off before a reconnect. */
export type Status = "connecting" | "open" | "waiting" | "closed";

/**
 * A failed attempt. The client retries by itself, except when `fatal`
 * (a 400 or 404: a bad mailbox name or prefix), which closes the
 * subscription. A `token` function that rejects passes on what it threw.
 */
export interface CometboxError {
  transport: ActiveTransport;
  message: string;
  /** HTTP status, long-poll only. */
  status?: number;
  /** WebSocket close code. */
  code?: number;
  fatal?: boolean;
}

interface BaseOptions {
  /**
   * Called when the gateway could not give everything after the cursor:
   * reload state. On several mailboxes, `mailbox` names the one that lost.
   */
  onMissed?(mailbox?: string): void;
  onError?(err: CometboxError): void;
  onStatus?(state: Status, transport: ActiveTransport | null): void;
  /** Default `"auto"`: EventSource, else long-poll; JSONP across origins without CORS. */
  transport?: Transport;
  /** The gateway's origin, when it is not the page's. */
  baseUrl?: string | URL;
  /** With a list of mailboxes: the path they live under. Default `"/mailbox/"`. */
  prefix?: string;
  /** Called (when a function) before every (re)connect; sent as `?token=`. */
  token?: string | (() => string | PromiseLike<string>);
  /** Extra query parameters on every request. */
  params?: Record<string, string>;
  /** Start after this id (a saved `cursor`) instead of with everything retained. */
  since?: string;
  /** Send cookies across origins (for `auth.cookie`). */
  withCredentials?: boolean;
  /** Cap of the reconnect backoff, ms. Default 30000. */
  maxDelay?: number;
  /** The gateway's `mailbox.poll-timeout`, s. Default 30. */
  pollTimeout?: number;
}

/** Payloads as sent: text as a string, bytes that are not UTF-8 as a Uint8Array. */
export interface TextOptions extends BaseOptions {
  json?: false;
  /** `mailbox` is set when the subscription follows several. */
  onMessage?(data: string | Uint8Array, id: string, mailbox?: string): void;
}

/** `json: true`: text payloads are `JSON.parse`d; binary ones stay bytes. */
export interface JsonOptions<T = unknown> extends BaseOptions {
  json: true;
  /** `mailbox` is set when the subscription follows several. */
  onMessage?(data: T | Uint8Array, id: string, mailbox?: string): void;
}

export type SubscribeOptions<T = unknown> = TextOptions | JsonOptions<T>;

export interface Subscription {
  /** The id of the last message delivered: save it to resume with `since`. */
  readonly cursor: string | null;
  /** The transport in use, once connected. */
  readonly transport: ActiveTransport | null;
  /** Stops everything; no callback runs after it. */
  close(): void;
}

/** Subscribes to a mailbox path such as `"/mailbox/user:42"`. */
/**
 * Or follows a list of mailbox names on one connection (at most the
 * gateway's `mailbox.max-per-connection`, default 16): messages name their
 * mailbox and the cursor is one position per mailbox joined by `,`.
 */
export function subscribe<T = unknown>(path: string | string[], options: JsonOptions<T>): Subscription;
export function subscribe(path: string | string[], options?: TextOptions): Subscription;

/** The client's protocol version. */
export const version: string;

declare const cometbox: {
  subscribe: typeof subscribe;
  version: string;
};
export default cometbox;
