// A channel's page: the live player, who, what, live or not, follow.

import { api, tokens } from "./api.js";
import { ChatPanel, chatMarkup } from "./chat.js";
import { clock, when } from "./format.js";
import { el, renderNav, say } from "./nav.js";
import { Player } from "./player.js";
import { showRecordings } from "./recordings.js";

const $ = (id) => document.getElementById(id);
const prefix = "/watch/";
const name = decodeURIComponent(location.pathname.slice(prefix.length).replace(/\/+$/, ""));

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function drawFollow(channel) {
  $("followers").textContent = plural(channel.followers, "follower", "followers");
  const button = $("follow-button");
  button.textContent = channel.following ? "Unfollow" : "Follow";
  button.classList.toggle("button-secondary", Boolean(channel.following));
  button.setAttribute("aria-pressed", String(Boolean(channel.following)));
  $("follow-bell").hidden = !channel.following;
  if (channel.notify) $("follow-bell").value = channel.notify;
}

function draw(channel, user) {
  document.title = `${channel.title || channel.name} · Tallylight`;
  $("channel-title").textContent = channel.title || channel.name;
  $("channel-owner").textContent = channel.display_name;
  $("channel-handle").textContent = `@${channel.owner}`;
  $("channel-description").textContent = channel.description;
  $("channel-description").hidden = !channel.description;
  $("channel-tags").replaceChildren(...channel.tags.map((tag) => el("li", { class: "tag" }, tag)));
  const avatar = $("channel-avatar");
  if (channel.avatar_url) avatar.src = channel.avatar_url;
  avatar.hidden = !channel.avatar_url;

  const state = $("live-state");
  state.textContent = channel.is_live ? "Live" : "Offline";
  state.className = `badge ${channel.is_live ? "badge-live" : "badge-offline"}`;
  $("viewers").textContent = plural(channel.viewer_count, "viewer", "viewers");
  $("viewers").hidden = !channel.is_live;
  drawUptime(channel);
  $("player").dataset.live = String(channel.is_live);

  const own = user && user.username === channel.owner;
  $("follow-button").hidden = !user || own;
  $("follow-login").hidden = Boolean(user);
  $("follow-login").href = `/login?next=${encodeURIComponent(location.pathname)}`;
  drawFollow(channel);
}

function drawUptime(channel) {
  const since = channel.is_live && channel.live_since ? Date.parse(channel.live_since) : null;
  $("uptime").hidden = !since;
  if (since) $("uptime").textContent = clock((Date.now() - since) / 1000);
}

/** The newest recording made since `since` (ms), or the newest at all when `since` is null. */
async function latestRecording(channel, since) {
  const page = await api("GET", `/api/channels/${encodeURIComponent(channel.name)}/recordings?limit=1`, undefined, { auth: false });
  const latest = page.items[0];
  if (!latest || (since !== null && Date.parse(latest.started_at) < since - 60_000)) return null;
  return latest;
}

/** "Last live 3 hours ago, for 1:02:03." from the channel's newest stream; "" when it never was. */
async function lastStream(channel) {
  try {
    const { items } = await api("GET", `/api/channels/${encodeURIComponent(channel.name)}/streams?limit=1`, undefined, { auth: false });
    const last = items[0];
    if (!last || !last.ended_at) return "";
    return `Last live ${ago(Date.parse(last.ended_at))}, for ${clock(last.duration)}.`;
  } catch {
    return "";
  }
}

function ago(when) {
  const seconds = Math.max(0, (Date.now() - when) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [unit, size] of units) {
    if (seconds >= size) {
      const n = Math.floor(seconds / size);
      return `${n} ${unit}${n === 1 ? "" : "s"} ago`;
    }
  }
  return "moments ago";
}

/** The channel's coming streams, under its description; the soonest one for the offline card. */
async function drawSchedule(channel) {
  let items = [];
  try {
    items = (await api("GET", `/api/channels/${encodeURIComponent(channel.name)}/schedule?limit=5`, undefined, { auth: false })).items;
  } catch {
    return null;
  }
  $("channel-upcoming-list").replaceChildren(...items.map((entry) => el("li", { class: "upcoming-entry" },
    el("time", { datetime: entry.starts_at, class: "upcoming-when" }, when(entry.starts_at)), " ", entry.title)));
  $("calendar-link").href = `/channels/${encodeURIComponent(channel.name)}/schedule.ics`;
  $("channel-upcoming").hidden = items.length === 0;
  return items[0] || null;
}

function recordingLink(recording, text) {
  return el("a", { id: "card-recording-link", href: recording.page_url }, text);
}

let cardToken = 0;

/** The card over the player: the end of a stream (with its recording once ready), or offline. */
async function drawCard(state, channel, startedAt) {
  const card = $("player-card");
  const token = ++cardToken;
  const slot = $("card-recording");
  slot.hidden = true;
  $("card-next").hidden = true;
  slot.replaceChildren();
  if (state === "ended") {
    $("card-title").textContent = "The stream has ended";
    $("card-text").textContent = `Thanks for watching ${channel.display_name}. This page plays the next stream by itself.`;
  } else {
    $("card-title").textContent = `${channel.display_name} is offline`;
    $("card-text").textContent = "This page starts playing as soon as the channel goes live.";
    lastStream(channel).then((text) => {
      if (token === cardToken && text) $("card-text").textContent = `${text} This page starts playing as soon as the channel goes live again.`;
    });
    drawSchedule(channel).then((next) => {
      if (token !== cardToken || !next) return;
      $("card-next").textContent = `Next: ${next.title}, ${when(next.starts_at)}`;
      $("card-next").hidden = false;
    });
  }
  // A keyboard user on a control that the card hides keeps a place: the card's heading.
  const hadFocus = $("player").querySelector(".player-controls")?.contains(document.activeElement);
  card.hidden = false;
  $("player").querySelector(".player-message").hidden = true;
  if (hadFocus) $("card-title").focus();
  // The recording: the one just made (processing, then ready) after a stream; the newest one offline.
  for (let i = 0; i < 90 && token === cardToken; i += 1) {
    const recording = await latestRecording(channel, state === "ended" ? startedAt : null).catch(() => null);
    if (token !== cardToken) return;
    if (recording && recording.state === "ready") {
      slot.replaceChildren(recordingLink(recording, state === "ended" ? "Watch the recording" : `Watch the latest recording: ${recording.title || "untitled"}`));
      slot.hidden = false;
      return;
    }
    if (state !== "ended" || !recording || recording.state === "failed") return;
    slot.replaceChildren(document.createTextNode("The recording is being prepared…"));
    slot.hidden = false;
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

let player = null;
let looking = false;

/** The chat's data channel closed: the stream may have ended (its "live" frame can be lost with the
 * channel). Ask a few times over the next seconds, since the server writes the end down just after. */
async function lookForTheEnd(channel, user) {
  if (looking) return;
  looking = true;
  try {
    for (let i = 0; i < 5; i += 1) {
      await refreshLiveState(channel, user);
      const state = player?.box.dataset.state;
      if (!channel.is_live || (state !== "playing" && state !== "reconnecting")) return;
      await new Promise((resolve) => setTimeout(resolve, 700));
    }
  } finally {
    looking = false;
  }
}
let asked = 0; // the latest look at the channel: an older answer arriving late is dropped

async function refreshLiveState(channel, user) {
  const mine = ++asked;
  let fresh;
  try {
    fresh = await api("GET", `/api/channels/${encodeURIComponent(channel.name)}`);
  } catch {
    return; // keep what is shown
  }
  if (mine !== asked) return;
  Object.assign(channel, fresh);
  draw(channel, user);
  // The stream is over while the player still shows (or reconnects to) it: the end card now.
  const state = player?.box.dataset.state;
  if (!channel.is_live && player?.played && (state === "playing" || state === "reconnecting")) player.ended();
}

async function main() {
  const user = await renderNav();
  if (!name || name.includes("/")) {
    say($("watch-status"), "There is no channel here.");
    return;
  }
  let channel;
  try {
    channel = await api("GET", `/api/channels/${encodeURIComponent(name)}`);
  } catch (error) {
    say($("watch-status"), error.status === 404 ? `There is no channel called “${name}”.` : error.message);
    return;
  }
  draw(channel, user);
  $("channel").hidden = false;
  $("chat").append(...chatMarkup());
  // ?chat=websocket keeps chat off the data channel (as for viewers of the HLS fallback).
  const chat = new ChatPanel($("chat"), channel.name, {
    forceWebSocket: new URLSearchParams(location.search).get("chat") === "websocket",
    onViewers: (count) => {
      channel.viewer_count = count;
      $("viewers").textContent = plural(count, "viewer", "viewers");
    },
    onDataChannelClosed: () => lookForTheEnd(channel, user), // often the first sign of the end
    onLive: (live) => {
      if (live) {
        player.connectSoon();
      } else {
        player.ended();
      }
      refreshLiveState(channel, user);
    },
  });
  chat.useWebSocket(); // until the player has a WebRTC session to chat on
  let startedAt = channel.live_since ? Date.parse(channel.live_since) : Date.now();
  let shown = null;
  player = new Player($("player"), channel.name, {
    theaterRoot: $("channel"),
    token: user ? tokens().access : null,
    hlsUrl: channel.urls?.hls,
    dashUrl: channel.urls?.dash,
    // The server's PLAYBACK_ORDER (WebRTC, then HLS by default); ?playback=hls or dash plays that alone.
    order: playbackOrder(channel),
    onState: (state) => {
      if (state === shown) return; // retries repeat a state: draw on changes only
      shown = state;
      if (state === "playing") startedAt = channel.live_since ? Date.parse(channel.live_since) : Date.now();
      if (state === "ended" || state === "offline") drawCard(state, channel, startedAt);
      else cardToken += 1;
      refreshLiveState(channel, user);
    },
    onDataChannel: (dataChannel) => chat.useDataChannel(dataChannel),
  });
  window.tallyPlayer = player; // for diagnostics in the console (and the end-to-end tests)
  window.tallyChat = chat;
  window.addEventListener("pagehide", () => {
    player.stop();
    chat.stop();
  });
  const recordings = () => showRecordings($("recording-list"), channel.name)
    .then((count) => { $("recordings-empty").hidden = count > 0; })
    .catch(() => null);
  recordings();
  drawSchedule(channel);
  await player.start();
  setInterval(() => refreshLiveState(channel, user), 5000);
  setInterval(() => drawUptime(channel), 1000);
  setInterval(recordings, 30000);

  const button = $("follow-button");
  button.addEventListener("click", async () => {
    button.disabled = true;
    say($("follow-error"), "");
    try {
      const result = await api(channel.following ? "DELETE" : "PUT", `/api/channels/${encodeURIComponent(channel.name)}/follow`);
      channel.following = result.following;
      channel.followers = result.followers;
      channel.notify = result.notify;
      drawFollow(channel);
    } catch (error) {
      say($("follow-error"), error.message);
    } finally {
      button.disabled = false;
    }
  });
  const bellChoice = $("follow-bell");
  bellChoice.addEventListener("change", async () => {
    bellChoice.disabled = true;
    say($("follow-error"), "");
    try {
      const result = await api("PUT", `/api/channels/${encodeURIComponent(channel.name)}/follow`, { notify: bellChoice.value });
      channel.notify = result.notify;
    } catch (error) {
      say($("follow-error"), error.message);
      bellChoice.value = channel.notify || "all";
    } finally {
      bellChoice.disabled = false;
    }
  });
}

await main();
document.body.dataset.ready = "true";

function playbackOrder(channel) {
  const asked = new URLSearchParams(location.search).get("playback");
  if (asked === "hls" || asked === "dash" || asked === "webrtc") return [asked];
  return channel.playback?.length ? channel.playback : ["webrtc", "hls"];
}
