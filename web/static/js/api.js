// The browser's client for the Tallylight HTTP API: token storage, and `api()` with refresh-once.
//
// Access tokens live 15 minutes. On a 401 from a call that carried one, the client swaps the refresh
// token for new tokens once and retries. Concurrent 401s share one refresh (one promise in this tab,
// a Web Lock across tabs), because a refresh token is single-use: spending it twice ends the session.

const ACCESS_KEY = "tally.access_token";
const REFRESH_KEY = "tally.refresh_token";
const LOCK_NAME = "tally.refresh";

/** An API failure, carrying the RFC 9457 problem document the server sent. */
export class ApiError extends Error {
  constructor(problem, retryAfter = null) {
    super(problem.detail || problem.title || `request failed (${problem.status})`);
    this.name = "ApiError";
    this.problem = problem;
    this.status = problem.status;
    this.title = problem.title || "";
    this.detail = this.message;
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    this.retryAfter = retryAfter;
  }

  /** Field errors as {field: message}; "tags.2" counts as "tags", the first message per field wins. */
  fieldErrors() {
    const out = {};
    for (const { field, message } of this.errors) {
      const name = String(field || "body").split(".")[0];
      if (!(name in out)) out[name] = String(message || "invalid").replace(/^Value error, /, "");
    }
    return out;
  }
}

export function tokens() {
  return { access: localStorage.getItem(ACCESS_KEY), refresh: localStorage.getItem(REFRESH_KEY) };
}

export function isSignedIn() {
  return Boolean(tokens().refresh);
}

export function storeTokens({ access_token, refresh_token }) {
  localStorage.setItem(ACCESS_KEY, access_token);
  localStorage.setItem(REFRESH_KEY, refresh_token);
}

export function forgetTokens() {
  localStorage.removeItem(ACCESS_KEY);
  localStorage.removeItem(REFRESH_KEY);
  window.dispatchEvent(new Event("tally:signed-out"));
}

async function send(method, path, body, accessToken) {
  const headers = { Accept: "application/json, application/problem+json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiError({ title: "Network error", status: 0, detail: "could not reach the server; try again" });
  }
}

async function read(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const json = type.includes("json") ? await response.json().catch(() => null) : null;
  if (response.ok) return json;
  const retry = response.headers.get("Retry-After");
  const problem = json && typeof json === "object" ? json : {};
  throw new ApiError(
    { title: response.statusText, detail: "", ...problem, status: response.status },
    retry === null ? null : Number(retry),
  );
}

let refreshing = null;

/** New tokens for the stored refresh token; resolves false (and forgets the tokens) when it is refused. */
function refreshTokens(spentAccess) {
  if (!refreshing) {
    const run = () => refreshNow(spentAccess);
    const locked = navigator.locks ? navigator.locks.request(LOCK_NAME, run) : run();
    refreshing = locked.finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function refreshNow(spentAccess) {
  const { access, refresh } = tokens();
  if (!refresh) return false;
  // Another tab (or an earlier refresh here) already replaced the token that was refused.
  if (access && access !== spentAccess) return true;
  const response = await send("POST", "/api/auth/refresh", { refresh_token: refresh });
  if (response.ok) {
    storeTokens(await response.json());
    return true;
  }
  if (response.status === 401 || response.status === 422) {
    forgetTokens();
    return false;
  }
  await read(response); // throws the server's problem (5xx, 429): the tokens may still be good
  return false;
}

/**
 * Call the API and return the parsed JSON body (null for 204); failures throw an ApiError.
 * `auth: false` sends no token (sign-up, log-in); otherwise the stored access token goes along.
 */
export async function api(method, path, body, { auth = true } = {}) {
  const access = auth ? tokens().access : null;
  const response = await send(method, path, body, access);
  if (response.status !== 401 || !access) return read(response);
  if (await refreshTokens(access)) {
    return read(await send(method, path, body, tokens().access));
  }
  // Signed out now: public endpoints still answer, the others say 401.
  return read(await send(method, path, body, null));
}

/** Log in with a password and keep the tokens. */
export async function logIn(username, password) {
  const result = await api("POST", "/api/auth/login", { username, password }, { auth: false });
  storeTokens(result);
  return result;
}

/** End this login session on the server (best effort) and forget the tokens. */
export async function logOut() {
  const { refresh } = tokens();
  if (refresh) {
    await send("POST", "/api/auth/logout", { refresh_token: refresh }).catch(() => null);
  }
  forgetTokens();
}

let me = null;

/** The signed-in user (GET /api/me, fetched once per page), or null when signed out. */
export function currentUser() {
  if (!me) {
    me = isSignedIn()
      ? api("GET", "/api/me").catch((error) => {
          if (error.status === 401) return null;
          throw error;
        })
      : Promise.resolve(null);
  }
  return me;
}

/** A same-site path to go to after signing in; anything else becomes "/". */
export function safeNext(value, fallback = "/") {
  if (!value || !value.startsWith("/")) return fallback;
  // Parsed as the browser would follow it (it drops tabs and newlines, so "/\t/evil.example" is another
  // site): only a path on this origin may come out.
  let url;
  try {
    url = new URL(value, location.origin);
  } catch {
    return fallback;
  }
  return url.origin === location.origin ? url.pathname + url.search + url.hash : fallback;
}

const RANK = { viewer: 1, broadcaster: 2, moderator: 3, admin: 4 };

/** Whether `user` has `role` or one above it. */
export function hasRole(user, role) {
  return Boolean(user) && (RANK[user.role] || 0) >= RANK[role];
}
