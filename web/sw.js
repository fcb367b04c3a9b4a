// Tallylight's service worker (at the site root, so it covers every page): the app shell works offline.
// Pages, styles and scripts go to the network first (a new deploy shows at once) and fall back to what
// was cached when the network is gone. The API, media (HLS, WebRTC, recordings) and chat are never
// touched here. The push notifications of a later issue add their handlers to this file.

const CACHE = "tally-shell-v1";
const SHELL = ["/", "/static/css/app.css", "/static/js/nav.js", "/static/js/api.js", "/static/js/index.js",
  "/static/js/format.js", "/static/icons/icon-192.png", "/manifest.webmanifest"];
const PAGES = /^\/(|login|signup|settings|studio|admin|watch\/[^/]+|recordings\/\d+)$/;
const MAX_ENTRIES = 80; // pages of channels visited, besides the shell: the oldest go first

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

function cacheable(url) {
  return url.origin === self.location.origin
    && (PAGES.test(url.pathname) || url.pathname.startsWith("/static/") || url.pathname.startsWith("/vendor/hls.js/")
      || url.pathname === "/manifest.webmanifest");
}

async function trim(cache) {
  const keys = await cache.keys();
  for (const old of keys.slice(0, Math.max(0, keys.length - MAX_ENTRIES))) await cache.delete(old);
}

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.type === "basic") {
      await cache.put(request, response.clone());
      trim(cache);
    }
    return response;
  } catch (error) {
    const cached = await cache.match(request, { ignoreSearch: request.mode === "navigate" });
    if (cached) return cached;
    if (request.mode === "navigate") {
      const home = await cache.match("/");
      if (home) return home;
    }
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (!cacheable(url)) return; // the API, media and chat go straight to the network
  event.respondWith(networkFirst(request));
});
