// The notifications page: what the bell counts, newest first; marking read; how you are told.

import { api, isSignedIn } from "./api.js";
import { setUnread } from "./bell.js";
import { ago } from "./format.js";
import { el, renderNav, say } from "./nav.js";

const $ = (id) => document.getElementById(id);
let before = null;

function item(note) {
  const link = el("a", { href: note.url || "/" }, note.title);
  link.addEventListener("click", async (event) => {
    if (note.read) return;
    event.preventDefault(); // mark it read first, then go
    try {
      setUnread((await api("POST", "/api/me/notifications/read", { ids: [note.id] })).unread);
    } finally {
      location.assign(link.href);
    }
  });
  return el("li", { class: "notification", dataset: { id: String(note.id), read: String(note.read), kind: note.kind } },
    link,
    note.body ? el("p", {}, note.body) : null,
    el("time", { datetime: note.created_at, title: new Date(note.created_at).toLocaleString() }, ago(note.created_at)),
  );
}

async function page() {
  const query = before ? `?before=${before}&limit=20` : "?limit=20";
  const listing = await api("GET", `/api/me/notifications${query}`);
  $("notifications").append(...listing.items.map(item));
  before = listing.next_before;
  $("more").hidden = !before;
  setUnread(listing.unread);
  $("read-all").hidden = listing.unread === 0;
  $("notifications-empty").hidden = $("notifications").children.length > 0;
}

async function main() {
  await renderNav();
  if (!isSignedIn()) {
    location.replace(`/login?next=${encodeURIComponent("/notifications")}`);
    return;
  }
  try {
    await page();
    const how = await api("GET", "/api/me/notification-settings");
    $("in_app").checked = how.in_app;
  } catch (error) {
    say($("notifications-status"), error.message);
  }
  $("more").addEventListener("click", () => page().catch((error) => say($("notifications-status"), error.message)));
  $("read-all").addEventListener("click", async () => {
    try {
      setUnread((await api("POST", "/api/me/notifications/read", {})).unread);
      for (const li of $("notifications").children) li.dataset.read = "true";
      $("read-all").hidden = true;
    } catch (error) {
      say($("notifications-status"), error.message);
    }
  });
  $("in_app").addEventListener("change", async () => {
    try {
      await api("PUT", "/api/me/notification-settings", { in_app: $("in_app").checked });
      say($("how-saved"), "Saved", "ok");
    } catch (error) {
      say($("notifications-status"), error.message);
    }
  });
  // What arrives while the page is open goes on top.
  window.addEventListener("tally:notification", (event) => {
    const note = event.detail;
    $("notifications").prepend(item({ ...note, id: 0, read: false, created_at: note.at }));
    $("notifications-empty").hidden = true;
    $("read-all").hidden = false;
  });
}

await main();
document.body.dataset.ready = "true";
