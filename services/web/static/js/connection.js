// Websockets to this server, and what a closed one means for the user.
//
// The server's conventions (services/http): a token travels as the `auth_id` query parameter
// (a browser cannot set headers on a websocket); a wrong or missing token refuses the
// handshake with HTTP 401 before the upgrade; after the upgrade, an error is a message (a
// msgpack {type: "Error"} for ASR / TTS, a kind-5 frame for chat) followed by a close with
// code 1008 (bad input, policy) or 1013 (try again later: every slot is busy, the message
// says when to retry).
//
// A browser hides the status of a refused handshake (the socket just closes with 1006), so
// when a socket closes before it opened, the page asks the same URL over plain HTTP: 401 there
// means the token is wrong.

const TOKEN_KEY = "moshi-services-token";

/** The token: `?token=` in the page's URL first, else the one the user saved. */
export function savedToken() {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl !== null) return fromUrl;
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function saveToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** The URL of `path` on this server (relative to the page: works behind a path prefix). */
export function apiUrl(path, params = {}, token = "") {
  const url = new URL(path, location.href);
  for (const [key, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  if (token) url.searchParams.set("auth_id", token);
  return url;
}

/** GET `path` as JSON (with the token); throws an Error saying what went wrong. */
export async function getJson(path, token = "") {
  const reply = await fetch(apiUrl(path, {}, token), { cache: "no-store" });
  if (reply.status === 401) throw new ServerError("auth", "the server refused the token");
  if (!reply.ok) throw new ServerError("error", `${path}: HTTP ${reply.status}`);
  return reply.json();
}

export class ServerError extends Error {
  constructor(kind, message, retryIn = null) {
    super(message);
    this.kind = kind;  // "auth" | "full" | "lost" | "error" | "unreachable"
    this.retryIn = retryIn;  // seconds, for "full"
  }
}

const RETRY = /retry in\s+([\d.]+)\s*s/i;

/** What a close means: null for a normal end, else a ServerError. `message` is the error
 * message the server sent before closing, if any. */
async function closeMeaning(url, event, opened, message) {
  if (!opened) {
    // Refused before the upgrade: 401 (token) or the server is not there.
    try {
      const probe = new URL(url);
      probe.protocol = probe.protocol === "wss:" ? "https:" : "http:";
      const reply = await fetch(probe, { cache: "no-store" });
      if (reply.status === 401) {
        return new ServerError("auth", "the server refused the token (HTTP 401)");
      }
      return new ServerError("error", `the server refused the connection (HTTP ${reply.status})`);
    } catch (error) {
      return new ServerError("unreachable", "cannot reach the server");
    }
  }
  const said = message || event.reason || "";
  if (event.code === 1013) {
    const retry = RETRY.exec(said);
    return new ServerError("full", said || "the server is full, retry later",
                           retry ? parseFloat(retry[1]) : 2);
  }
  if (event.code === 1008) {
    const auth = /token|auth/i.test(said);
    return new ServerError(auth ? "auth" : "error", said || "the server refused the request");
  }
  if (said) return new ServerError("error", said);
  if (event.code === 1000) return null;
  return new ServerError("lost", `the socket closed unexpectedly (code ${event.code})`);
}

/**
 * A websocket to `path` with binary messages as ArrayBuffers. Handlers: onOpen(), onMessage(data),
 * onEnd(error or null): called once, whether the server or the page closed it (a close the
 * page asked for is never an error). `error(message)` records a message the server sent
 * before closing, so the close can be explained with it.
 */
export class Socket {
  constructor(path, params, token, { onOpen, onMessage, onEnd }) {
    this.url = apiUrl(path, params, token);
    this.url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    this.opened = false;
    this.closing = false;
    this.serverMessage = "";
    this.ws = new WebSocket(this.url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => { this.opened = true; if (onOpen) onOpen(); };
    this.ws.onmessage = (event) => onMessage(event.data);
    this.ws.onclose = async (event) => {
      const meaning = this.closing && !this.serverMessage ? null
        : await closeMeaning(this.url, event, this.opened, this.serverMessage);
      onEnd(meaning);
    };
  }

  error(message) { this.serverMessage = message; }

  get open() { return this.ws.readyState === WebSocket.OPEN; }

  send(data) { if (this.open) this.ws.send(data); }

  /** Bytes queued in the browser, not yet sent (for pacing a file upload). */
  get buffered() { return this.ws.bufferedAmount; }

  close() {
    this.closing = true;
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}
