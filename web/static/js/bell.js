// The bell in the header: how many notifications are unread, kept current in every open tab.
//
// Each tab keeps a WebSocket of its own to `/ws` (no channel: its user's notifications only). A new
// notification adds one to the count and shows a short toast; the count is read again from the API
// when the tab comes back into view, so tabs agree after marking read elsewhere.

import { api, tokens } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const RETRY_MAX = 30_000; // ms between reconnects at most

let unread = 0;
let link = null;
let badge = null;

function icon() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", "M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1z");
  path.setAttribute("fill", "currentColor");
  svg.append(path);
  return svg;
}

function draw() {
  badge.textContent = unread > 99 ? "99+" : String(unread);
  badge.hidden = unread === 0;
  link.setAttribute("aria-label", unread ? `Notifications, ${unread} unread` : "Notifications");
  link.dataset.unread = String(unread);
}

/** Set the count (the notifications page calls this after marking read). */
export function setUnread(count) {
  unread = Math.max(0, count);
  if (link) draw();
}

async function refresh() {
  try {
    setUnread((await api("GET", "/api/me/notifications?limit=1")).unread);
  } catch {
    // keep the last count
  }
}

function toast(note) {
  let box = document.getElementById("toast");
  if (!box) {
    box = document.createElement("div");
    box.id = "toast";
    box.className = "toast";
    box.setAttribute("role", "status");
    document.body.append(box);
  }
  const a = document.createElement("a");
  a.href = note.url || "/notifications";
  a.textContent = note.title;
  const body = document.createElement("span");
  body.textContent = note.body || "";
  box.replaceChildren(a, body);
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

function listen() {
  let delay = 1000;
  let reauthAt = 0;
  const open = () => {
    if (!tokens().refresh) return; // signed out meanwhile
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
    ws.addEventListener("open", () => {
      const token = tokens().access;
      if (token) ws.send(JSON.stringify({ type: "auth", token }));
    });
    ws.addEventListener("message", async (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "notification") {
        setUnread(unread + 1);
        toast(frame);
        window.dispatchEvent(new CustomEvent("tally:notification", { detail: frame }));
      } else if (frame.type === "you" && frame.username) {
        delay = 1000; // signed in and listening: what arrives from now on is counted
        link.dataset.live = "true";
      } else if (frame.type === "error" && frame.code === "bad_token") {
        // The access token expired: refresh it, at most once a minute; past that, start over later.
        if (Date.now() < reauthAt) {
          ws.close();
          return;
        }
        reauthAt = Date.now() + 60_000;
        await refresh();
        const token = tokens().access;
        if (token && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "auth", token }));
      }
    });
    ws.addEventListener("close", () => {
      link.dataset.live = "false";
      setTimeout(open, delay * (0.75 + Math.random() / 2)); // spread out: tabs do not all come back at once
      delay = Math.min(RETRY_MAX, delay * 2);
      refresh(); // what arrived while away
    });
  };
  open();
}

/** The bell, for a signed-in user's header. */
export function bell() {
  link = document.createElement("a");
  link.id = "nav-bell";
  link.className = "nav-bell";
  link.href = "/notifications";
  if (location.pathname === "/notifications") link.setAttribute("aria-current", "page");
  badge = document.createElement("span");
  badge.id = "bell-count";
  badge.className = "bell-count";
  badge.setAttribute("aria-hidden", "true");
  link.append(icon(), badge);
  draw();
  refresh().then(listen);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refresh();
  });
  return link;
}
