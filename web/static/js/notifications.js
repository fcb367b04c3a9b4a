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
    if (note.read || !note.id) return;
    event.preventDefault(); // mark it read first, then go
    try {
      setUnread((await api("POST", "/api/me/notifications/read", { ids: [note.id] })).unread);
    } catch {
      // going there matters more than the mark
    }
    location.assign(link.href);
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

function drawEmail(how) {
  const state = $("email-state");
  $("email-choice").hidden = !how.email_available;
  state.hidden = !how.email_available;
  const outcome = new URLSearchParams(location.search).get("email");
  if (!how.email_available) return;
  state.textContent = outcome === "broken" ? "That verification link is broken or expired: send yourself a new one."
    : how.email_verified ? (outcome === "verified" ? "Your address is verified." : "Emails go to your verified address.")
    : "Verify your address to get emails.";
  $("email-verify").hidden = how.email_verified;
}

/** This browser's push subscription, or null (and null where push cannot work: no service worker). */
async function subscription() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !window.isSecureContext) return undefined;
  const registration = await navigator.serviceWorker.ready;
  return registration.pushManager.getSubscription();
}

async function drawPush() {
  const current = await subscription();
  const toggle = $("push-toggle");
  if (current === undefined) {
    $("push-state").textContent = "This browser cannot receive push notifications from this site (it needs HTTPS).";
    toggle.hidden = true;
    return;
  }
  const blocked = Notification.permission === "denied";
  $("push-state").textContent = current ? "On in this browser." : blocked
    ? "Blocked for this site in this browser's settings." : "Off in this browser.";
  toggle.textContent = current ? "Turn off in this browser" : "Turn on in this browser";
  toggle.hidden = blocked && !current;
  toggle.dataset.state = current ? "on" : "off";
}

async function togglePush() {
  say($("push-error"), "");
  const current = await subscription();
  if (current) {
    await api("DELETE", "/api/me/push-subscriptions", { endpoint: current.endpoint });
    await current.unsubscribe();
  } else {
    if ((await Notification.requestPermission()) !== "granted") {
      await drawPush();
      return;
    }
    const { public_key: key } = await api("GET", "/api/push/public-key", undefined, { auth: false });
    const registration = await navigator.serviceWorker.ready;
    let created;
    try {
      created = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    } catch (error) {
      throw new Error(`This browser could not reach its push service (${error.message}). Try again later.`);
    }
    await api("POST", "/api/me/push-subscriptions", created.toJSON());
    if (!$("push").checked) {
      $("push").checked = true;
      await api("PUT", "/api/me/notification-settings", { push: true });
    }
  }
  await drawPush();
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
    $("push").checked = how.push;
    $("email").checked = how.email;
    drawEmail(how);
    await drawPush();
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
  $("email-verify").addEventListener("click", async () => {
    $("email-verify").disabled = true;
    try {
      await api("POST", "/api/me/email/verify");
      $("email-state").textContent = "Sent: open the link in the email we just sent you (it works for two days).";
    } catch (error) {
      say($("notifications-status"), error.message);
      $("email-verify").disabled = false;
    }
  });
  for (const choice of ["in_app", "push", "email"]) {
    $(choice).addEventListener("change", async () => {
      try {
        await api("PUT", "/api/me/notification-settings", { [choice]: $(choice).checked });
        say($("how-saved"), "Saved", "ok");
      } catch (error) {
        say($("notifications-status"), error.message);
      }
    });
  }
  $("push-toggle").addEventListener("click", () => togglePush().catch((error) => say($("push-error"), error.message)));
  // What arrives while the page is open goes on top.
  window.addEventListener("tally:notification", (event) => {
    const note = event.detail;
    $("notifications").prepend(item({ ...note, read: false, created_at: note.at }));
    $("notifications-empty").hidden = true;
    $("read-all").hidden = false;
  });
}

await main();
document.body.dataset.ready = "true";
