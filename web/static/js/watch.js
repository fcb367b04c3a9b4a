// A channel's page: the live player, who, what, live or not, follow.

import { api, tokens } from "./api.js";
import { ChatPanel, chatMarkup } from "./chat.js";
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
  $("player").dataset.live = String(channel.is_live);

  const own = user && user.username === channel.owner;
  $("follow-button").hidden = !user || own;
  $("follow-login").hidden = Boolean(user);
  $("follow-login").href = `/login?next=${encodeURIComponent(location.pathname)}`;
  drawFollow(channel);
}

async function refreshLiveState(channel, user) {
  try {
    Object.assign(channel, await api("GET", `/api/channels/${encodeURIComponent(channel.name)}`));
    draw(channel, user);
  } catch {
    // keep what is shown
  }
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
  });
  chat.useWebSocket(); // until the player has a WebRTC session to chat on
  const player = new Player($("player"), channel.name, {
    token: user ? tokens().access : null,
    hlsUrl: channel.urls?.hls,
    // ?playback=hls watches over HLS only (what the page falls back to by itself when WebRTC fails).
    prefer: new URLSearchParams(location.search).get("playback") === "hls" ? "hls" : "webrtc",
    onState: (state) => refreshLiveState(channel, user, state),
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
  await player.start();
  setInterval(() => refreshLiveState(channel, user), 5000);
  setInterval(recordings, 30000);

  const button = $("follow-button");
  button.addEventListener("click", async () => {
    button.disabled = true;
    say($("follow-error"), "");
    try {
      const result = await api(channel.following ? "DELETE" : "PUT", `/api/channels/${encodeURIComponent(channel.name)}/follow`);
      channel.following = result.following;
      channel.followers = result.followers;
      drawFollow(channel);
    } catch (error) {
      say($("follow-error"), error.message);
    } finally {
      button.disabled = false;
    }
  });
}

await main();
document.body.dataset.ready = "true";
