// Tallylight's service worker (at the site root, so it covers every page): the app shell works offline.
// Pages, styles and scripts go to the network first (a new deploy shows at once) and fall back to what
// was cached when the network is gone. The API, media (HLS, WebRTC, recordings) and chat are never
// touched here. The push notifications of a later issue add their handlers to this file.

const SHELL_CACHE = "tally-shell-v3"; // the shell: kept whole (never trimmed), the offline fallback
const PAGE_CACHE = "tally-pages-v3"; // pages and files visited since: the oldest go first
const SHELL = ["/", "/static/css/app.css", "/static/js/nav.js", "/static/js/api.js", "/static/js/index.js",
  "/static/js/format.js", "/static/js/bell.js", "/static/icons/icon-192.png", "/manifest.webmanifest"];
const PAGES = /^\/(|login|signup|settings|studio|admin|notifications|watch\/[^/]+|recordings\/\d+)$/;
const MAX_ENTRIES = 80;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL_CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== SHELL_CACHE && name !== PAGE_CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

function cacheable(url) {
  return url.origin === self.location.origin
    && (PAGES.test(url.pathname) || url.pathname.startsWith("/static/") || url.pathname.startsWith("/vendor/hls.js/")
      || url.pathname === "/manifest.webmanifest");
}

async function keep(request, response) {
  const url = new URL(request.url);
  const cache = await caches.open(SHELL.includes(url.pathname) ? SHELL_CACHE : PAGE_CACHE);
  await cache.put(request, response);
  if (SHELL.includes(url.pathname)) return; // the shell is never trimmed
  const keys = await cache.keys();
  for (const old of keys.slice(0, Math.max(0, keys.length - MAX_ENTRIES))) await cache.delete(old);
}

async function cached(request) {
  const options = { ignoreSearch: request.mode === "navigate" };
  return (await caches.match(request, options)) || (request.mode === "navigate" ? caches.match("/") : undefined);
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (!cacheable(url)) return; // the API, media and chat go straight to the network
  event.respondWith((async () => {
    let response;
    try {
      response = await fetch(request);
    } catch (error) {
      const fallback = await cached(request); // offline: what was kept
      if (fallback) return fallback;
      throw error;
    }
    // Keeping a copy is a side job: a full quota or an evicted cache never costs the page its answer.
    if (response.ok && response.type === "basic") {
      event.waitUntil(keep(request, response.clone()).catch(() => null));
    }
    return response;
  })());
});
