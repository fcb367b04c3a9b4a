// Go live from the browser: pick devices, preview, publish over WHIP, watch the connection and audience.

import { api, currentUser, hasRole, tokens } from "./api.js";
import { ChatPanel, chatMarkup } from "./chat.js";
import { renderNav, say } from "./nav.js";
import { hangUp, negotiate, preferCodec, SessionError } from "./webrtc.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

let stream = null; // what the preview shows and what goes live
let screen = null;
let pc = null;
let senders = null;
let session = null;
let statsTimer = null;
let lastBytes = null;

function setConnection(state, text) {
  $("connection").dataset.state = state;
  $("connection").textContent = text;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [["videoinput", $("camera")], ["audioinput", $("microphone")]]) {
    const current = select.value;
    select.replaceChildren(
      ...devices
        .filter((d) => d.kind === kind)
        .map((d, i) => new Option(d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`, d.deviceId)),
    );
    if (current) select.value = current;
  }
}

async function openDevices() {
  const video = $("camera").value ? { deviceId: { exact: $("camera").value } } : true;
  const audio = $("microphone").value ? { deviceId: { exact: $("microphone").value } } : true;
  const next = await navigator.mediaDevices.getUserMedia({
    video: { ...(video === true ? {} : video), width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    audio,
  });
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = next;
  $("preview").srcObject = stream;
  await replaceLiveTracks();
}

async function replaceLiveTracks() {
  if (!pc) return;
  const video = (screen || stream).getVideoTracks()[0] || null;
  const audio = stream.getAudioTracks()[0] || null;
  await senders.video.replaceTrack(video);
  await senders.audio.replaceTrack(audio);
}

async function shareScreen() {
  if (screen) {
    screen.getTracks().forEach((t) => t.stop());
    screen = null;
    $("share-screen").textContent = "Share screen";
    $("preview").srcObject = stream;
  } else {
    screen = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 30 }, audio: false });
    screen.getVideoTracks()[0].addEventListener("ended", () => screen && shareScreen());
    $("share-screen").textContent = "Stop sharing";
    $("preview").srcObject = new MediaStream([...screen.getVideoTracks(), ...stream.getAudioTracks()]);
  }
  await replaceLiveTracks();
}

async function goLive(user) {
  $("go-live").disabled = true;
  say($("studio-status"), "");
  setConnection("connecting", "Connecting…");
  try {
    await connect(user);
  } catch (error) {
    $("go-live").disabled = false;
    const wait = error instanceof SessionError && error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    setConnection("idle", "Not live");
    say($("studio-status"), `Could not go live: ${error.message}.${wait}`);
    return;
  }
  $("go-live").hidden = true;
  $("end").hidden = false;
  $("go-live").disabled = false;
  statsTimer = setInterval(() => updateStats(user), 1000);
}

/** A new peer connection and WHIP session with what the preview shows; throws if refused. */
async function connect(user) {
  await api("GET", "/api/me"); // refreshes the access token if it is about to be refused
  const next = new RTCPeerConnection();
  pc = next;
  const audio = next.addTransceiver(stream.getAudioTracks()[0], { direction: "sendonly", streams: [stream] });
  const video = next.addTransceiver((screen || stream).getVideoTracks()[0], { direction: "sendonly", streams: [stream] });
  senders = { audio: audio.sender, video: video.sender };
  preferCodec(video, params.get("codec") || $("codec").value);
  next.addEventListener("connectionstatechange", () => {
    if (next !== pc) return;
    const state = next.connectionState;
    if (state === "connected") setConnection("live", "Live");
    else if (state === "disconnected") setConnection("reconnecting", "Connection unstable…");
    else if (state === "failed" || state === "closed") reconnect(user);
  });
  let started;
  try {
    started = await publishWithRetry(next, user);
  } catch (error) {
    next.close();
    if (pc === next) pc = null;
    throw error;
  }
  if (pc === next) session = started;
  else hangUp(started.location); // End was pressed while this was connecting
}

// The connection failed (network change, server restart, the session ended on the server): publish
// again without ending the stream. The server hands the channel to the new connection once the old
// one has gone silent, and viewers stay connected when the format is unchanged.
async function reconnect(user) {
  const old = pc;
  pc = null;
  session = null; // no DELETE: that would end the stream for everyone watching
  old?.close();
  for (let attempt = 1; $("end").hidden === false; attempt += 1) {
    setConnection("reconnecting", `Connection lost. Reconnecting (attempt ${attempt})…`);
    try {
      await connect(user);
      return;
    } catch (error) {
      if (error instanceof SessionError && error.status < 500 && error.status !== 409) {
        setConnection("failed", `Could not reconnect: ${error.message}. Press End, then Go live.`);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(10, attempt * 2) * 1000));
    }
  }
}

// After a drop, the old connection holds the channel until it has been silent for a moment: the
// server answers 409 with Retry-After, and we try again a few times before giving up.
async function publishWithRetry(pc, user) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await negotiate(pc, `/whip/${encodeURIComponent(user.username)}`, tokens().access);
    } catch (error) {
      if (!(error instanceof SessionError) || error.status !== 409 || attempt >= 5) throw error;
      setConnection("connecting", `Waiting for the previous connection to time out (${error.retryAfter || 2} s)…`);
      await new Promise((resolve) => setTimeout(resolve, (error.retryAfter || 2) * 1000));
      await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
    }
  }
}

async function endStream() {
  clearInterval(statsTimer);
  await hangUp(session?.location);
  session = null;
  pc?.close();
  pc = null;
  lastBytes = null;
  $("end").hidden = true;
  $("go-live").hidden = false;
  setConnection("idle", "Not live");
  $("bitrate").textContent = "–";
}

async function updateStats(user) {
  if (!pc) return;
  const report = await pc.getStats();
  let bytes = 0;
  let at = 0;
  report.forEach((s) => {
    if (s.type === "outbound-rtp") {
      bytes += s.bytesSent;
      at = s.timestamp;
    }
  });
  if (lastBytes && at > lastBytes.at) {
    const kbps = ((bytes - lastBytes.bytes) * 8) / (at - lastBytes.at);
    $("bitrate").textContent = `${Math.round(kbps)} kbit/s`;
    $("bitrate").dataset.kbps = String(Math.round(kbps));
  }
  lastBytes = { bytes, at };
  try {
    const channel = await api("GET", `/api/channels/${encodeURIComponent(user.username)}`);
    $("studio-viewers").textContent = String(channel.viewer_count);
    const latest = await api("GET", `/api/channels/${encodeURIComponent(user.username)}/recordings?limit=1`);
    drawRecording(latest.items[0]?.state === "recording", channel.is_live);
  } catch {
    // keep the last count
  }
}

let recordingActive = false;

function drawRecording(active, live) {
  recordingActive = active;
  $("record-toggle").textContent = active ? "Stop recording" : "Start recording";
  $("record-toggle").disabled = !live && !active;
  $("record-state").hidden = !active;
  $("record-state").dataset.active = String(active);
}

async function setUpRecording(user) {
  const path = `/api/channels/${encodeURIComponent(user.username)}`;
  const channel = await api("GET", path);
  $("record-streams").checked = channel.record_streams;
  $("record-streams").addEventListener("change", async (event) => {
    try {
      await api("PATCH", path, { record_streams: event.target.checked });
      say($("record-status"), event.target.checked ? "Your next streams will be recorded." : "Streams will not be recorded.", "ok");
    } catch (error) {
      event.target.checked = !event.target.checked;
      say($("record-status"), error.message);
    }
  });
  $("record-toggle").addEventListener("click", async () => {
    $("record-toggle").disabled = true;
    try {
      const result = await api("PUT", `${path}/recording`, { active: !recordingActive });
      drawRecording(result.active, true);
      say($("record-status"), result.active ? "Recording." : "Recording stopped; it will be on your channel page shortly.", "ok");
    } catch (error) {
      say($("record-status"), error.message);
      drawRecording(recordingActive, $("connection").dataset.state === "live");
    }
  });
}

async function appointModerator(event, user) {
  event.preventDefault();
  const name = $("moderator-name").value.trim();
  if (!name) return;
  try {
    const result = await api("PUT", `/api/channels/${encodeURIComponent(user.username)}/moderators/${encodeURIComponent(name)}`);
    say($("moderator-status"), `Moderators: ${result.items.join(", ")}`, "ok");
    $("moderator-name").value = "";
  } catch (error) {
    say($("moderator-status"), error.message);
  }
}

async function main() {
  await renderNav();
  const user = await currentUser();
  if (!user) {
    location.replace(`/login?next=${encodeURIComponent("/studio")}`);
    return;
  }
  if (!hasRole(user, "broadcaster")) {
    say($("studio-status"), "Going live needs the broadcaster role. Ask an admin.");
    return;
  }
  if (params.get("codec")) $("codec").value = params.get("codec");
  $("channel-link").href = `/watch/${encodeURIComponent(user.username)}`;
  $("channel-link").textContent = `/watch/${user.username}`;
  try {
    await openDevices();
    await listDevices();
  } catch (error) {
    say($("studio-status"), `No camera or microphone: ${error.message}`);
    return;
  }
  $("studio").hidden = false;
  $("camera").addEventListener("change", () => openDevices().catch((e) => say($("studio-status"), e.message)));
  $("microphone").addEventListener("change", () => openDevices().catch((e) => say($("studio-status"), e.message)));
  $("share-screen").addEventListener("click", () => shareScreen().catch((e) => say($("studio-status"), e.message)));
  $("chat").append(...chatMarkup());
  const chat = new ChatPanel($("chat"), user.username, {
    onViewers: (count) => {
      $("studio-viewers").textContent = String(count);
    },
  });
  chat.useWebSocket(); // the studio chats over the WebSocket, so chat stays up while not live
  window.tallyChat = chat;
  $("moderator-form").addEventListener("submit", (event) => appointModerator(event, user));
  setUpRecording(user).catch((error) => say($("record-status"), error.message));
  $("go-live").addEventListener("click", () => goLive(user));
  $("end").addEventListener("click", endStream);
  window.addEventListener("pagehide", () => hangUp(session?.location));
}

await main();
document.body.dataset.ready = "true";
