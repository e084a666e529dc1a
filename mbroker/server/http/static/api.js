// The JSON API, as the dashboard calls it: one function, errors as ApiError.

export class ApiError extends Error {
  constructor(status, code, reason) {
    super(`${code}: ${reason}`);
    this.status = status;
    this.code = code;
    this.reason = reason;
  }
}

// `method` `path` (below /api), with a JSON body for a change: the API refuses a
// change without a JSON content type (no cross-site form can send one).
export async function api(method, path, body) {
  const init = {
    method,
    headers: { Accept: "application/json" },
    credentials: "same-origin",
    cache: "no-store",
  };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  const response = await fetch("/api/" + path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new ApiError(response.status, "BAD_REPLY", "the broker's answer is not JSON");
    }
  }
  if (!response.ok) {
    const code = data && data.error ? data.error : String(response.status);
    const reason = data && data.reason ? data.reason : response.statusText;
    throw new ApiError(response.status, code, reason);
  }
  return data;
}

// A queue's or exchange's name as one path segment.
export function segment(name) {
  return encodeURIComponent(name);
}

// The query string of `params`, without the empty ones.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}
