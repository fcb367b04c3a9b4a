// Go live from the browser: pick devices, preview, publish over WHIP, watch the connection and audience.

import { api, currentUser, hasRole, tokens } from "./api.js";
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
  await api("GET", "/api/me"); // refreshes the access token if it is about to be refused
  pc = new RTCPeerConnection();
  const audio = pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendonly", streams: [stream] });
  const video = pc.addTransceiver((screen || stream).getVideoTracks()[0], { direction: "sendonly", streams: [stream] });
  senders = { audio: audio.sender, video: video.sender };
  preferCodec(video, params.get("codec") || $("codec").value);
  pc.addEventListener("connectionstatechange", () => {
    const state = pc?.connectionState;
    if (state === "connected") setConnection("live", "Live");
    else if (state === "disconnected") setConnection("reconnecting", "Connection unstable…");
    else if (state === "failed") setConnection("failed", "Connection lost. Press Go live to reconnect.");
  });
  try {
    session = await publishWithRetry(pc, user);
  } catch (error) {
    pc.close();
    pc = null;
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
  } catch {
    // keep the last count
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
  $("go-live").addEventListener("click", () => goLive(user));
  $("end").addEventListener("click", endStream);
  window.addEventListener("pagehide", () => hangUp(session?.location));
}

await main();
document.body.dataset.ready = "true";
