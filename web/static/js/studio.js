// Go live from the browser: pick devices, preview, publish over WHIP, watch the connection and audience.

import { api, currentUser, hasRole, tokens } from "./api.js";
import { ChatPanel, chatMarkup } from "./chat.js";
import { rtcConfiguration } from "./ice.js";
import { IngestPanel } from "./ingest_panel.js";
import { clock, copyText, parseTags, when } from "./format.js";
import { busy, clearErrors, el, guardLeaving, renderNav, say, showErrors } from "./nav.js";
import { hangUp, negotiate, preferCodec, SessionError } from "./webrtc.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

let stream = null; // what the preview shows and what goes live
let screen = null;
let pc = null;
let senders = null;
let session = null;
let ends = 0; // times End was pressed: a reconnect under way when it changes stops
let statsTimer = null;
let lastBytes = null;
let ingestPanel = null; // the stream's health while live (from here, OBS or any encoder)
let live = null; // while live: { since (ms), peak viewers, followers at the start }
let meter = null; // the microphone level meter's audio graph
let serverLive = false; // the server says the channel is live (not only that the connection is up)

function setConnection(state, text) {
  $("connection").dataset.state = state;
  $("connection").textContent = text;
  if ($("live-badge")) drawLive();
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
  startMeter();
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
  $("summary").hidden = true;
  live = { since: Date.now(), peak: 0, followers: null, user };
  updateStats(user); // at once: "Starting" becomes "Live" as soon as the server has the stream
  api("GET", `/api/channels/${encodeURIComponent(user.username)}`)
    .then((channel) => { if (live) live.followers = channel.followers; })
    .catch(() => null);
  drawLive();
  statsTimer = setInterval(() => updateStats(user), 1000);
}

/** LIVE and the time live on the preview, from the moment the stream started. */
function drawLive() {
  const on = Boolean(live) && $("connection").dataset.state !== "idle";
  $("live-badge").hidden = !on || $("connection").dataset.state !== "live";
  $("uptime").hidden = !on;
  if (on) $("uptime").textContent = clock((Date.now() - live.since) / 1000);
}

/** A new peer connection and WHIP session with what the preview shows; throws if refused. */
async function connect(user) {
  const since = ends;
  await api("GET", "/api/me"); // refreshes the access token if it is about to be refused
  const configuration = await rtcConfiguration();
  if (ends !== since) return; // End was pressed while a reconnect asked: stay ended
  const next = new RTCPeerConnection(configuration);
  pc = next;
  const audio = next.addTransceiver(stream.getAudioTracks()[0], { direction: "sendonly", streams: [stream] });
  const video = next.addTransceiver((screen || stream).getVideoTracks()[0], { direction: "sendonly", streams: [stream] });
  senders = { audio: audio.sender, video: video.sender };
  preferCodec(video, params.get("codec") || $("codec").value);
  next.addEventListener("connectionstatechange", () => {
    if (next !== pc) return;
    const state = next.connectionState;
    // Connected is not yet live: the channel is live once the server has the stream (its first
    // packets, written down), which the stats loop reads every second.
    if (state === "connected") setConnection(serverLive ? "live" : "starting", serverLive ? "Live" : "Starting the stream…");
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

/** End asks first, in the page (no blocking dialog): "End the stream for N viewers?" */
function askToEnd() {
  const viewers = Number($("studio-viewers").textContent) || 0;
  $("end-question").textContent = viewers
    ? `End the stream? ${viewers} ${viewers === 1 ? "viewer is" : "viewers are"} watching.`
    : "End the stream?";
  $("end-confirm").hidden = false;
  $("end-now").focus();
}

async function endStream() {
  ends += 1;
  $("end-confirm").hidden = true;
  serverLive = false;
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
  $("health").hidden = true;
  $("studio-viewers").textContent = "0";
  drawRecording(false, false); // the recording ends with the stream
  const ended = live;
  live = null;
  drawLive();
  if (ended) showSummary(ended);
}

/** After the stream: how long, the peak audience, new followers, and the recording once it is there. */
async function showSummary(ended) {
  const name = encodeURIComponent(ended.user.username);
  $("summary-duration").textContent = clock((Date.now() - ended.since) / 1000);
  $("summary-peak").textContent = String(ended.peak);
  $("summary-followers").textContent = "…";
  $("summary-recording").textContent = "Not recorded";
  $("summary").hidden = false;
  $("summary").focus();
  try {
    const channel = await api("GET", `/api/channels/${name}`);
    $("summary-followers").textContent = ended.followers === null ? "–" : String(Math.max(0, channel.followers - ended.followers));
    // The server's peak counts every viewer it saw (HLS ones too), not only this page's looks.
    const last = (await api("GET", `/api/channels/${name}/streams?limit=1`)).items[0];
    if (last && Date.parse(last.started_at) >= ended.since - 60_000) {
      $("summary-peak").textContent = String(Math.max(ended.peak, last.peak_viewers));
    }
  } catch {
    $("summary-followers").textContent = $("summary-followers").textContent === "…" ? "–" : $("summary-followers").textContent;
  }
  // The recording of this stream (started after we went live): processing first, then ready.
  for (let i = 0; i < 60 && !$("summary").hidden && !live; i += 1) {
    try {
      const latest = (await api("GET", `/api/channels/${name}/recordings?limit=1`)).items[0];
      if (latest && Date.parse(latest.started_at) >= ended.since - 60_000) {
        const text = latest.state === "ready" ? "Watch the recording" : latest.state === "failed" ? "The recording failed" : "Being prepared…";
        $("summary-recording").replaceChildren(latest.state === "failed"
          ? document.createTextNode(text)
          : Object.assign(document.createElement("a"), { href: latest.page_url, textContent: text, id: "summary-recording-link" }));
        if (latest.state === "ready" || latest.state === "failed") return;
      }
    } catch {
      // try again
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function updateStats(user) {
  if (!pc) return;
  const asked = live; // this stream: an answer that comes after it ended must not draw it again
  const report = await pc.getStats();
  if (!live || live !== asked) return; // ended meanwhile (the health chip came back after the end)
  let bytes = 0;
  let at = 0;
  report.forEach((s) => {
    if (s.type === "outbound-rtp") {
      bytes += s.bytesSent;
      at = s.timestamp;
    }
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
      ingestPanel?.localRtt(s.currentRoundTripTime * 1000);
    }
  });
  if (lastBytes && at > lastBytes.at) {
    const kbps = ((bytes - lastBytes.bytes) * 8) / (at - lastBytes.at);
    $("bitrate").textContent = `${Math.round(kbps)} kbit/s`;
    $("bitrate").dataset.kbps = String(Math.round(kbps));
    drawHealth(kbps);
  }
  lastBytes = { bytes, at };
  drawLive();
  try {
    const channel = await api("GET", `/api/channels/${encodeURIComponent(user.username)}`);
    if (!live || live !== asked) return; // ended while asking
    if (channel.is_live && !serverLive) ingestPanel?.poll(); // its graphs now, not at its next idle look
    serverLive = channel.is_live;
    if (serverLive && $("connection").dataset.state === "starting") setConnection("live", "Live");
    $("studio-viewers").textContent = String(channel.viewer_count);
    live.peak = Math.max(live.peak, channel.viewer_count);
    const latest = await api("GET", `/api/channels/${encodeURIComponent(user.username)}/recordings?limit=1`);
    if (!live || live !== asked) return; // (REC came back on the preview after the end when this was missing)
    drawRecording(latest.items[0]?.state === "recording", channel.is_live);
  } catch {
    // keep the last count
  }
}

/** The upload at a glance on the preview: the bitrate, and a word when it is too low to look good. */
function drawHealth(kbps) {
  const health = $("health");
  const level = kbps < 150 ? "bad" : kbps < 500 ? "poor" : "good";
  health.dataset.level = level;
  health.textContent = `${Math.round(kbps)} kbit/s${level === "good" ? "" : level === "poor" ? " · low" : " · very low"}`;
  health.title = level === "good" ? "Upload healthy" : "Your upload is low: viewers may see a blurry or stuttering picture";
  health.hidden = false;
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

/** Title, description and tags, applied while live without touching the stream. */
async function setUpInfo(user) {
  const form = $("info-form");
  const path = `/api/channels/${encodeURIComponent(user.username)}`;
  const fill = (channel) => {
    form.elements.title.value = channel.title;
    form.elements.description.value = channel.description;
    form.elements.tags.value = channel.tags.join(", ");
  };
  fill(await api("GET", path));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, $("info-error"));
    $("info-saved").textContent = "";
    await busy(form, async () => {
      try {
        fill(await api("PATCH", path, {
          title: form.elements.title.value.trim(),
          description: form.elements.description.value,
          tags: parseTags(form.elements.tags.value),
        }));
        $("info-saved").textContent = live ? "Saved: viewers see it now" : "Saved";
      } catch (error) {
        showErrors(form, $("info-error"), error);
      }
    });
  });
}

/** Streams to come: add one (a local date and time, sent with its zone), list them, take one off. */
async function setUpSchedule(user) {
  const path = `/api/channels/${encodeURIComponent(user.username)}/schedule`;
  const form = $("schedule-form");
  const draw = async () => {
    const { items } = await api("GET", path);
    $("schedule-list").replaceChildren(...items.map((entry) => el("li", { class: "schedule-entry", dataset: { id: String(entry.id) } },
      el("span", {}, `${when(entry.starts_at)} · ${entry.title}`),
      el("button", { type: "button", class: "link-button", "aria-label": `Delete ${entry.title} on ${when(entry.starts_at)}`,
        onClick: async () => {
          try {
            await api("DELETE", `${path}/${entry.id}`);
          } catch (error) {
            say($("schedule-error"), error.message);
          }
          draw();
        } }, "Delete"))));
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, $("schedule-error"));
    const local = form.elements.starts_at.value;
    await busy(form, async () => {
      try {
        await api("POST", path, {
          title: form.elements.title.value.trim(),
          starts_at: local ? new Date(local).toISOString() : "",
          expected_minutes: Number(form.elements.expected_minutes.value) || 0,
        });
        form.reset();
        await draw();
      } catch (error) {
        showErrors(form, $("schedule-error"), error);
      }
    });
  });
  await draw();
}

async function setUpObs() {
  const key = await api("GET", "/api/me/stream-key");
  $("whip-url").value = key.whip_url;
  $("key-hint").textContent = key.hint || "none yet";
  $("copy-whip").addEventListener("click", () => copyText(key.whip_url, $("copy-status"), $("whip-url")));
  for (const scheme of ["rtmp", "rtmps"]) {
    const url = key[`${scheme}_url`];
    if (!url) continue;
    $(`${scheme}-url`).value = url;
    $(`${scheme}-field`).hidden = false;
    $("rtmp-help").hidden = false;
    $(`copy-${scheme}`).addEventListener("click", () => copyText(url, $("copy-status"), $(`${scheme}-url`)));
  }
}

/** The microphone's level, about ten times a second, on a <meter>. */
function startMeter() {
  meter?.context.close().catch(() => null);
  meter = null;
  const track = stream?.getAudioTracks()[0];
  if (!track || !window.AudioContext) return;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    $("mic-level").value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
  }, 100);
  meter = { context, timer };
  context.addEventListener("statechange", () => { if (context.state === "closed") clearInterval(timer); });
}

// Audio graphs start on a gesture: the first click or key on the page lets the meter move before Go live.
for (const gesture of ["pointerdown", "keydown"]) {
  window.addEventListener(gesture, () => meter?.context.resume().catch(() => null), { once: true });
}

/** On a phone: the next camera (front, back). */
async function flipCamera() {
  const select = $("camera");
  if (select.options.length < 2) return;
  const before = select.selectedIndex;
  select.selectedIndex = (before + 1) % select.options.length;
  // Many phones cannot open two cameras at once: let go of this one first.
  stream?.getVideoTracks().forEach((t) => t.stop());
  try {
    await openDevices();
  } catch (error) {
    select.selectedIndex = before; // the other camera would not open: back to this one
    await openDevices();
    throw error;
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
  $("analytics-link").href = `/analytics/${encodeURIComponent(user.username)}`;
  try {
    await openDevices();
    await listDevices();
  } catch (error) {
    say($("studio-status"), `No camera or microphone: ${error.message}`);
    return;
  }
  $("studio").hidden = false;
  $("flip-camera").hidden = $("camera").options.length < 2;
  $("flip-camera").addEventListener("click", () => flipCamera().catch((e) => say($("studio-status"), e.message)));
  // The panels fill in side by side; the page says it is ready once they can take input.
  const setups = [
    setUpInfo(user).catch((error) => say($("info-error"), error.message)),
    setUpObs().catch(() => null),
    setUpSchedule(user).catch((error) => say($("schedule-error"), error.message)),
    setUpRecording(user).catch((error) => say($("record-status"), error.message)),
  ];
  $("camera").addEventListener("change", () => openDevices().catch((e) => say($("studio-status"), e.message)));
  $("microphone").addEventListener("change", () => openDevices().catch((e) => say($("studio-status"), e.message)));
  $("share-screen").addEventListener("click", () => shareScreen().catch((e) => say($("studio-status"), e.message)));
  ingestPanel = new IngestPanel($("ingest"), user.username);
  ingestPanel.start();
  $("chat").append(...chatMarkup());
  const chat = new ChatPanel($("chat"), user.username, {
    onViewers: (count) => {
      $("studio-viewers").textContent = String(count);
    },
  });
  chat.useWebSocket(); // the studio chats over the WebSocket, so chat stays up while not live
  window.tallyChat = chat;
  $("moderator-form").addEventListener("submit", (event) => appointModerator(event, user));
  $("go-live").addEventListener("click", () => {
    meter?.context.resume().catch(() => null); // audio graphs start on a click
    goLive(user);
  });
  $("end").addEventListener("click", askToEnd);
  $("end-now").addEventListener("click", endStream);
  $("end-cancel").addEventListener("click", () => {
    $("end-confirm").hidden = true;
    $("end").focus();
  });
  // Leaving while live ends the stream: ask first, in the header's links and when the tab closes.
  const whileLive = () => (live ? "You are live. Leaving this page ends your stream. Leave anyway?" : null);
  guardLeaving(whileLive);
  let leaving = false; // the page asked already (a header link, Log out): the browser need not ask again
  window.addEventListener("beforeunload", (event) => {
    if (!whileLive() || leaving) return;
    event.preventDefault();
    event.returnValue = ""; // the browser shows its own "Leave site?" question
  });
  window.addEventListener("tally:leaving", () => {
    leaving = true;
    setTimeout(() => { leaving = false; }, 3000); // a navigation that did not happen asks again later
  });
  window.addEventListener("pagehide", () => hangUp(session?.location));
  await Promise.all(setups);
}

await main();
document.body.dataset.ready = "true";
