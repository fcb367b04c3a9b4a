// The directory: search, a live-only toggle, and a card per channel.

import { api } from "./api.js";
import { when } from "./format.js";
import { el, renderNav, say } from "./nav.js";

const list = document.getElementById("channels");
const search = document.getElementById("search");
const liveOnly = document.getElementById("live-only");
const status = document.getElementById("directory-status");
const more = document.getElementById("load-more");

let user = null;
let cursor = null;
let generation = 0; // answers to an older query are dropped

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function byline(channel) {
  return channel.display_name === channel.owner ? `@${channel.owner}` : `${channel.display_name} · @${channel.owner}`;
}

function followButton(channel, counter) {
  if (!user || channel.owner === user.username) return null;
  const button = el("button", { type: "button", class: "button button-small follow-button" });
  const draw = () => {
    button.textContent = channel.following ? "Unfollow" : "Follow";
    button.classList.toggle("button-secondary", Boolean(channel.following));
    button.setAttribute("aria-pressed", String(Boolean(channel.following)));
  };
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const result = await api(channel.following ? "DELETE" : "PUT", `/api/channels/${encodeURIComponent(channel.name)}/follow`);
      channel.following = result.following;
      channel.followers = result.followers;
      counter.textContent = plural(result.followers, "follower", "followers");
      draw();
    } catch (error) {
      say(status, error.message);
    } finally {
      button.disabled = false;
    }
  });
  draw();
  return button;
}

function card(channel) {
  const watch = `/watch/${encodeURIComponent(channel.name)}`;
  const counter = el("span", { class: "followers" }, plural(channel.followers, "follower", "followers"));
  const avatar = channel.avatar_url
    ? el("img", { class: "avatar", src: channel.avatar_url, alt: "", loading: "lazy", referrerpolicy: "no-referrer" })
    : el("span", { class: "avatar avatar-letter", "aria-hidden": "true" }, channel.name.slice(0, 1).toUpperCase());
  // A live channel shows what is on now (the picture is refreshed every few seconds on the server).
  const preview = channel.is_live
    ? el("a", { href: watch, class: "live-preview", "aria-hidden": "true", tabindex: "-1" },
      el("img", { src: `${channel.urls.thumbnail}?t=${Math.floor(Date.now() / 10000)}`, alt: "", loading: "lazy",
        onerror: (event) => { event.target.parentElement.hidden = true; } }))
    : null;
  return el("li", { class: "card channel-card", dataset: { channel: channel.name } },
    preview,
    el("div", { class: "card-head" },
      avatar,
      el("div", { class: "card-titles" },
        el("a", { href: watch, class: "channel-title" }, channel.title || channel.name),
        el("span", { class: "muted channel-owner" }, byline(channel)),
      ),
    ),
    el("div", { class: "card-meta" },
      channel.is_live
        ? el("span", { class: "badge badge-live" }, "Live")
        : el("span", { class: "badge badge-offline" }, "Offline"),
      channel.is_live ? el("span", { class: "viewers" }, plural(channel.viewer_count, "viewer", "viewers")) : null,
      counter,
    ),
    channel.tags.length
      ? el("ul", { class: "tags" }, channel.tags.map((tag) => el("li", { class: "tag" }, tag)))
      : null,
    el("div", { class: "card-actions" },
      el("a", { href: watch, class: "button button-small button-secondary" }, "Watch"),
      followButton(channel, counter),
    ),
  );
}

async function load(append = false) {
  const mine = ++generation;
  const params = new URLSearchParams();
  const q = search.value.trim();
  if (q) params.set("q", q);
  if (liveOnly.checked) params.set("live", "true");
  if (append && cursor) params.set("cursor", cursor);
  list.setAttribute("aria-busy", "true");
  try {
    const page = await api("GET", `/api/channels?${params}`);
    if (mine !== generation) return;
    if (!append) list.replaceChildren();
    list.append(...page.items.map(card));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const none = liveOnly.checked ? "No channel is live right now." : "No channels match.";
    say(status, list.children.length ? "" : none, "info");
  } catch (error) {
    if (mine === generation) say(status, error.message);
  } finally {
    if (mine === generation) list.removeAttribute("aria-busy");
  }
}

let typing = null;
search.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => load(), 250);
});
liveOnly.addEventListener("change", () => load());
document.getElementById("directory-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(typing);
  load();
});
more.addEventListener("click", () => load(true));

/** Streams coming on any channel, soonest first. */
async function upcoming() {
  try {
    const { items } = await api("GET", "/api/schedule?limit=8", undefined, { auth: false });
    document.getElementById("upcoming-list").replaceChildren(...items.map((entry) => el("li", { class: "upcoming-entry" },
      el("time", { datetime: entry.starts_at, class: "upcoming-when" }, when(entry.starts_at)), " ",
      el("a", { href: `/watch/${encodeURIComponent(entry.channel)}` }, entry.title), " ",
      el("span", { class: "muted" }, `· ${entry.display_name}`))));
    document.getElementById("upcoming").hidden = items.length === 0;
  } catch {
    // the directory works without it
  }
}

user = await renderNav();
await Promise.all([load(), upcoming()]);
document.body.dataset.ready = "true";
