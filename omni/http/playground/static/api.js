// Talking to omni: the API key, requests, error messages and Server-Sent Events.

const KEY_NAME = "omni-api-key";

export class ApiError extends Error {
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

// Called with the server's message whenever an answer is 401, so the page can ask for a key.
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) onUnauthorized(error.message);
    throw error;
  }
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export function postJson(path, body, signal) {
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
}

// The server's own message: OpenAI's envelope {"error": {"message", "param"}}, else the text.
async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) {
      return new ApiError(response.status, body.error.message, body.error.param);
    }
  } catch (_) {
    // not JSON: a proxy's page, say
  }
  const message = text.trim() || response.statusText || "no message";
  return new ApiError(response.status, `${response.status}: ${message}`, null);
}

export function isEventStream(response) {
  return (response.headers.get("Content-Type") || "").startsWith("text/event-stream");
}

// Calls onEvent(name, data) for each event of a text/event-stream answer, data parsed as JSON.
export async function readEvents(response, onEvent) {
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
      dispatch(block, onEvent);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a comment, e.g. a keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return;
  const text = data.join("\n");
  if (text === "[DONE]") return;
  onEvent(name, JSON.parse(text));
}

// An object URL for base64 bytes, so big images need no giant data: URL in the DOM.
export function blobUrl(base64, type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type }));
}

export function randomSeed() {
  return Math.floor(Math.random() * 2 ** 32);
}
