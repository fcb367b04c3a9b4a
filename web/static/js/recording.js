// A recording's page: the HTML5 player (seeking uses HTTP ranges), what it is, and delete for its owner.

import { api, hasRole } from "./api.js";
import { renderNav, say } from "./nav.js";
import { duration, STATE_TEXT } from "./recordings.js";

const $ = (id) => document.getElementById(id);
const id = location.pathname.split("/")[2] || "";

function draw(recording, user) {
  const when = new Date(recording.started_at).toLocaleString();
  document.title = `${recording.title || recording.channel} · Tallylight`;
  $("recording-title").textContent = recording.title || `Stream of ${when}`;
  $("recording-channel").textContent = `@${recording.channel}`;
  $("recording-channel").href = `/watch/${encodeURIComponent(recording.channel)}`;
  $("recording-when").textContent = when;
  $("recording-duration").textContent = recording.state === "ready" ? duration(recording.duration) : STATE_TEXT[recording.state];
  $("recording").dataset.state = recording.state;
  const video = $("playback");
  const message = $("playback-message");
  if (recording.state === "ready") {
    if (video.dataset.src !== recording.playback_url) {
      video.dataset.src = recording.playback_url;
      if (recording.thumbnail_url) video.poster = recording.thumbnail_url;
      video.src = recording.playback_url;
    }
    message.hidden = true;
  } else {
    message.hidden = false;
    message.textContent = recording.state === "failed"
      ? `This recording failed: ${recording.error || "unknown error"}`
      : "This recording is being prepared; it plays here as soon as it is ready.";
  }
  $("delete-recording").hidden = !user || !(user.username === recording.channel || hasRole(user, "admin"));
}

async function main() {
  const user = await renderNav();
  if (!/^\d{1,10}$/.test(id)) {
    say($("recording-status"), "There is no recording here.");
    return;
  }
  let recording;
  try {
    recording = await api("GET", `/api/recordings/${id}`, undefined, { auth: false });
  } catch (error) {
    say($("recording-status"), error.status === 404 ? "There is no such recording (it may have been deleted)." : error.message);
    return;
  }
  draw(recording, user);
  $("recording").hidden = false;
  const poll = setInterval(async () => {
    if (recording.state === "ready" || recording.state === "failed") {
      clearInterval(poll);
      return;
    }
    try {
      recording = await api("GET", `/api/recordings/${id}`, undefined, { auth: false });
      draw(recording, user);
    } catch {
      // try again at the next tick
    }
  }, 2000);
  $("delete-recording").addEventListener("click", async () => {
    if (!confirm("Delete this recording for good?")) return;
    try {
      await api("DELETE", `/api/recordings/${id}`);
      location.assign(`/watch/${encodeURIComponent(recording.channel)}`);
    } catch (error) {
      say($("recording-status"), error.message);
    }
  });
  window.tallyRecording = () => recording;
}

await main();
document.body.dataset.ready = "true";
