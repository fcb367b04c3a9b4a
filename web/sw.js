// Tallylight's service worker (at the site root, so it covers every page): the app shell works offline.
// Pages, styles and scripts go to the network first (a new deploy shows at once) and fall back to what
// was cached when the network is gone. The API, media (HLS, WebRTC, recordings) and chat are never
// touched here. Browser push: a push shows a notification (even with the site closed); a click on it
// brings up the page it names (a tab already there, one of ours navigated there, or a new window).

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

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { title: event.data ? event.data.text() : "" };
  }
  event.waitUntil(self.registration.showNotification(String(data.title || "Tallylight"), {
    body: String(data.body || ""),
    tag: data.tag ? String(data.tag) : undefined, // a newer push about the same thing replaces the older
    icon: "/static/icons/icon-192.png",
    data: { url: sameOrigin(data.url) },
  }));
});

function sameOrigin(url) {
  try {
    const target = new URL(url || "/", self.location.origin);
    return target.origin === self.location.origin ? target.href : self.location.origin + "/";
  } catch {
    return self.location.origin + "/";
  }
}

async function bringUp(url) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const there = windows.find((client) => client.url === url);
  if (there) return there.focus().catch(() => null);
  const ours = windows.find((client) => "navigate" in client);
  if (ours) {
    const moved = await ours.navigate(url);
    return (moved || ours).focus().catch(() => null);
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const done = bringUp(sameOrigin(event.notification.data && event.notification.data.url));
  try {
    event.waitUntil(done);
  } catch {
    // an event the browser did not send (only tests make those): the work goes on all the same
  }
});
