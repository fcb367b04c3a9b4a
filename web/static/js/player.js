// The live player: WebRTC (WHEP) first, for sub-second delay; low-latency HLS by itself when WebRTC
// cannot connect or the node is full (503), with a label saying which one is playing. While on HLS it
// keeps trying WebRTC in the background and moves back as soon as a WebRTC picture arrives. Shows an
// offline state when the channel is not live, and reconnects when the network blips or the
// broadcaster comes back.

import { api } from "./api.js";
import { DashPlayback } from "./dash_playback.js";
import { HlsPlayback } from "./hls_playback.js";
import { rtcConfiguration } from "./ice.js";
import { PlayerControls } from "./player_controls.js";
import { Viewing } from "./viewing.js";
import { hangUp, negotiate, SessionError } from "./webrtc.js";

const CONNECT_TIMEOUT = 6000; // ms a WebRTC session may take to show its first picture
const MODES = { webrtc: "WebRTC · real time", hls: "HLS · low latency", dash: "DASH · low latency" };
const HTTP = { hls: HlsPlayback, dash: DashPlayback };

function videoElement(label) {
  const video = document.createElement("video");
  video.className = "video";
  video.autoplay = true;
  video.muted = true; // browsers only autoplay muted media; the button below unmutes
  video.playsInline = true;
  video.setAttribute("aria-label", label);
  return video;
}

export class Player {
  constructor(box, channel, { token = null, hlsUrl = null, dashUrl = null, order = ["webrtc", "hls"], onState = () => {},
    onDataChannel = null, theaterRoot = box } = {}) {
    this.box = box;
    this.channel = channel;
    this.token = token;
    this.urls = {
      hls: hlsUrl || `/hls/${encodeURIComponent(channel)}/index.m3u8`,
      dash: dashUrl || `/dash/${encodeURIComponent(channel)}/manifest.mpd`,
    };
    // What plays: WebRTC first, then the first HTTP protocol of `order` when it cannot; an order that
    // starts with HLS or DASH (the ?playback= choice) plays that alone.
    this.prefer = order[0] === "webrtc" ? "webrtc" : "http";
    this.httpKind = order.find((kind) => kind in HTTP) || null; // null: WebRTC only, no fallback
    this.onState = onState;
    this.onDataChannel = onDataChannel; // gets each session's "chat" data channel
    this.pc = null;
    this.session = null;
    this.timer = null;
    this.watchdog = null;
    this.failures = 0;
    this.hls = null; // the HlsPlayback while HLS plays
    this.rtcViewing = null; // the Viewing of the WebRTC session, and of the HLS playback (its beacons)
    this.hlsViewing = null;
    this.stopped = false;
    this.video = videoElement("Live video");
    this.hlsVideo = videoElement("Live video (HLS)");
    this.hlsVideo.hidden = true;
    this.message = box.querySelector(".player-message");
    this.message.setAttribute("role", "status");
    this.card = box.querySelector(".player-card");
    this.mode = document.createElement("span");
    this.mode.className = "player-mode";
    this.mode.hidden = true;
    this.unmute = document.createElement("button");
    this.unmute.type = "button";
    this.unmute.className = "button player-unmute";
    this.unmute.textContent = "Unmute";
    this.unmute.hidden = true;
    this.unmute.addEventListener("click", () => this.controls.setMuted(false));
    box.prepend(this.video, this.hlsVideo);
    box.append(this.unmute);
    this.controls = new PlayerControls(this, theaterRoot);
    // A click on the picture pauses; on a touch screen the first tap shows the controls instead.
    const tap = () => {
      if (window.matchMedia("(hover: none)").matches && !this.controls.shown) this.controls.show();
      else this.controls.togglePause();
    };
    this.video.addEventListener("click", tap);
    this.hlsVideo.addEventListener("click", tap);
  }

  get videos() {
    return [this.video, this.hlsVideo];
  }

  /** The <video> that is showing. */
  get activeVideo() {
    return this.hls ? this.hlsVideo : this.video;
  }

  /** Seconds behind the broadcaster: hls.js's estimate, or for WebRTC the receiver's jitter buffer plus
   * half the round trip (the network and the SFU's forwarding). Null when not known. */
  async latency() {
    if (this.hls) return this.hls.latency;
    if (!this.pc || this.box.dataset.state !== "playing") return null;
    const report = await this.pc.getStats();
    let buffer = null;
    let rtt = 0;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
        buffer = s.jitterBufferDelay / s.jitterBufferEmittedCount;
      }
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
    });
    return buffer === null ? null : buffer + rtt / 2;
  }

  /** Choose a rendition: an hls.js level ("-1" automatic), or a WebRTC layer of the server's ("auto"). */
  async setLevel(value) {
    if (this.hls) {
      if (/^-?\d+$/.test(value)) this.hls.setLevel(Number(value)); // not a WebRTC layer's name left in the menu
      return;
    }
    if (!this.session) return;
    try {
      this.drawLayers(await api("PUT", `${this.session.location}/layers`, { layer: value }, { auth: false }));
    } catch {
      this.lookAtLayers(); // show what holds now
    }
  }

  /** The server's layers for this WebRTC session (the source, and the HLS ladder's renditions while it
   * runs), looked at every 30 s while WebRTC plays (and when the menu is opened). */
  async lookAtLayers() {
    clearTimeout(this.layerTimer);
    if (this.stopped || this.hls || !this.session || this.box.dataset.state !== "playing") return;
    const session = this.session;
    try {
      const layers = await api("GET", `${session.location}/layers`, undefined, { auth: false });
      if (session === this.session && !this.hls) this.drawLayers(layers);
    } catch {
      // the session is going: the next one looks again
    }
    this.layerTimer = setTimeout(() => this.lookAtLayers(), 30_000);
  }

  drawLayers(layers) {
    const label = (name) => (name === "source" ? "Source" : name);
    this.controls.setLevels(layers.choices.map((name) => ({ value: name, label: label(name) })), "auto",
      layers.auto ? "auto" : layers.current);
  }

  get playing() {
    return this.hls ? this.httpKind : this.box.dataset.state === "playing" ? "webrtc" : null;
  }

  setState(state, text) {
    this.box.dataset.state = state;
    if (this.card && state !== "ended" && state !== "offline") this.card.hidden = true;
    this.message.textContent = text;
    const showing = state === "playing" || state === "reconnecting" || Boolean(this.hls);
    this.message.hidden = showing && !text;
    this.video.hidden = Boolean(this.hls) || !showing;
    this.hlsVideo.hidden = !this.hls;
    if (state !== "playing") this.unmute.hidden = true;
    this.onState(state);
  }

  /** The channel went live (the chat said so): connect now rather than at the next retry. */
  connectSoon() {
    const state = this.box.dataset.state;
    if (this.stopped || (state !== "ended" && state !== "offline" && state !== "error")) return;
    this.retry(300);
  }

  /** The stream ended (the chat or the server said so): the end card now, and wait for the next one. */
  ended() {
    if (this.stopped || this.box.dataset.state === "ended") return;
    this.closeSession();
    this.stopHls();
    this.video.srcObject = null;
    this.setMode(null);
    this.controls.setLevels([]);
    this.setState("ended", "");
    this.retry(5000);
  }

  setMode(mode, why = "") {
    this.box.dataset.mode = mode || "";
    this.mode.hidden = !mode;
    this.mode.textContent = mode ? MODES[mode] : "";
    this.mode.title = why;
  }

  async start() {
    this.stopped = false;
    if (this.prefer === "http") await this.fallBack(`${this.httpKind.toUpperCase()} was asked for`);
    else await this.connect();
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.closeSession();
    const configuration = await rtcConfiguration();
    if (this.stopped || this.pc) return; // stopped, or another connect won while this one asked
    const pc = new RTCPeerConnection(configuration);
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const chat = this.onDataChannel ? pc.createDataChannel("chat") : null;
    const media = new MediaStream();
    pc.addEventListener("track", (event) => {
      media.addTrack(event.track);
      this.video.srcObject = media;
    });
    pc.addEventListener("connectionstatechange", () => this.watchConnection(pc));
    // Looking again while the end or offline card shows is a quiet probe: the card stays until a picture.
    const was = this.box.dataset.state;
    const probing = was === "ended" || was === "offline";
    if (!this.hls && !probing) this.setState(was === "playing" ? "reconnecting" : "connecting", "Connecting…");
    let session;
    const asked = performance.now();
    try {
      session = await negotiate(pc, `/whep/${encodeURIComponent(this.channel)}`, this.token);
    } catch (error) {
      if (pc !== this.pc || this.stopped) return;
      this.closeSession();
      if (error instanceof SessionError && error.status === 409) {
        this.stopHls();
        this.setMode(null);
        if (!probing) this.setState(was === "playing" || was === "reconnecting" ? "ended" : "offline", "");
        this.retry((error.retryAfter || 5) * 1000);
      } else if (error instanceof SessionError && error.status === 503) {
        await this.fallBack("this server has no room for another WebRTC viewer");
        this.retry(Math.max(5, error.retryAfter || 10) * 1000);
      } else {
        await this.fallBack(`WebRTC could not start: ${error.message}`);
        this.retry(15000);
      }
      return;
    }
    if (pc !== this.pc || this.stopped) {
      hangUp(session.location); // ended or stopped while this was negotiating: nobody will use it
      return;
    }
    this.session = session;
    this.rtcViewing = new Viewing(this.video, { channel: this.channel, transport: "webrtc", asked,
      whepSession: session.location.split("/").pop(), latency: () => this.latency() });
    if (chat) this.onDataChannel(chat);
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.webrtcFailed(pc, "no picture arrived over WebRTC"), CONNECT_TIMEOUT);
    this.video.requestVideoFrameCallback?.(() => {
      if (pc !== this.pc) return;
      clearTimeout(this.watchdog);
      this.failures = 0;
      this.stopHls();
      this.playedWebRtc = true;
      this.rtcViewing?.started();
      this.setMode("webrtc");
      this.setState("playing", "");
      this.controls.setLevels([]);
      this.lookAtLayers(); // the server's layers, when the ladder runs
      this.controls.apply();
      if (this.controls.paused) this.video.pause();
    });
  }

  async webrtcFailed(pc, why) {
    if (pc !== this.pc || this.stopped) return;
    this.failures += 1;
    this.closeSession();
    if (this.failures >= 2 || this.hls) {
      await this.fallBack(why);
      this.retry(15000);
    } else {
      this.retry(500);
    }
  }

  async fallBack(why) {
    if (this.stopped) return;
    if (!this.httpKind) {
      this.setState("error", `${why}. Retrying…`);
      return;
    }
    if (!this.hls) {
      const was = this.box.dataset.state;
      this.video.srcObject = null;
      const hls = new HTTP[this.httpKind](this.hlsVideo, this.urls[this.httpKind], {
        onError: (detail) => {
          if (this.hls !== hls) return;
          const played = hls.played; // this playback showed frames before it stopped
          this.stopHls();
          this.setMode(null);
          // No playlist: the channel is not live (or no longer). Anything else: say what stopped it.
          const state = this.box.dataset.state;
          if (/manifest(Load|Parsing)Error|levelLoadError/.test(detail)) {
            if (played) this.setState("ended", "");
            else if (state !== "ended" && state !== "offline") this.setState("offline", "");
          } else {
            this.setState("error", `${this.httpKind.toUpperCase()} stopped (${detail}). Retrying…`);
          }
          this.retry(3000);
        },
        onLevels: (levels) => this.controls.setLevels(levels),
        onPlaying: () => {
          if (this.hls !== hls) return;
          this.setMode(this.httpKind, why);
          this.setState("playing", "");
          this.controls.apply();
          if (this.controls.paused) this.hlsVideo.pause();
          this.hlsViewing?.started(); // its beacons count this player among the HLS viewers
        },
      });
      this.hls = hls;
      this.hlsViewing = new Viewing(this.hlsVideo, { channel: this.channel, transport: "hls",
        latency: async () => this.hls?.latency ?? null });
      this.controls.setLevels([]); // the renditions come with the playlist
      // A quiet start behind the end or offline card; else say it is starting.
      if (was !== "ended" && was !== "offline" && was !== "playing") {
        this.setState("connecting", `Starting ${this.httpKind.toUpperCase()}…`);
      }
      try {
        await hls.start();
      } catch (error) {
        if (this.hls === hls) {
          this.hlsViewing?.end();
          this.hlsViewing = null;
          this.hls = null;
          this.setState("error", error.message);
        }
      }
    }
  }

  stopHls() {
    this.hlsViewing?.end(); // counted no longer (as the WebRTC viewer it may become)
    this.hlsViewing = null;
    if (this.hls) this.hls.stop();
    this.hls = null;
  }

  watchConnection(pc) {
    if (pc !== this.pc) return;
    const state = pc.connectionState;
    if (state === "failed" || state === "closed") {
      if (!this.hls) this.setState("reconnecting", "Reconnecting…");
      this.webrtcFailed(pc, "the WebRTC connection failed");
    } else if (state === "disconnected") {
      if (!this.hls) this.setState("reconnecting", "Reconnecting…");
      this.retry(3000); // a blip often heals by itself; if not, start over
    } else if (state === "connected" && this.box.dataset.state === "reconnecting") {
      clearTimeout(this.timer);
      this.setState("playing", "");
      this.lookAtLayers();
    }
  }

  retry(ms) {
    clearTimeout(this.timer);
    // HTTP only (?playback=hls or dash): try the manifest again (the channel may have gone live since).
    this.timer = setTimeout(() => (this.prefer === "http" ? this.start() : this.connect()), ms);
  }

  closeSession() {
    this.rtcViewing?.end();
    this.rtcViewing = null;
    clearTimeout(this.watchdog);
    clearTimeout(this.layerTimer);
    if (this.session) hangUp(this.session.location);
    this.session = null;
    if (this.pc) this.pc.close();
    this.pc = null;
  }

  /** Whether this page showed the stream's picture (so its end is an end, not "offline"). */
  get played() {
    return Boolean(this.playedWebRtc || this.hls?.played);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.closeSession();
    this.stopHls();
    this.controls.stop();
  }
}
