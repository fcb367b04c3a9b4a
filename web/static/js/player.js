// The live player: WebRTC (WHEP) first, for sub-second delay; low-latency HLS by itself when WebRTC
// cannot connect or the node is full (503), with a label saying which one is playing. While on HLS it
// keeps trying WebRTC in the background and moves back as soon as a WebRTC picture arrives. Shows an
// offline state when the channel is not live, and reconnects when the network blips or the
// broadcaster comes back.

import { HlsPlayback } from "./hls_playback.js";
import { hangUp, negotiate, SessionError } from "./webrtc.js";

const CONNECT_TIMEOUT = 6000; // ms a WebRTC session may take to show its first picture
const MODES = { webrtc: "WebRTC · real time", hls: "HLS · low latency" };

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
  constructor(box, channel, { token = null, hlsUrl = null, prefer = "webrtc", onState = () => {}, onDataChannel = null } = {}) {
    this.box = box;
    this.channel = channel;
    this.token = token;
    this.hlsUrl = hlsUrl || `/hls/${encodeURIComponent(channel)}/index.m3u8`;
    this.prefer = prefer; // "hls": HLS only (the ?playback=hls choice)
    this.onState = onState;
    this.onDataChannel = onDataChannel; // gets each session's "chat" data channel
    this.pc = null;
    this.session = null;
    this.timer = null;
    this.watchdog = null;
    this.failures = 0;
    this.hls = null; // the HlsPlayback while HLS plays
    this.stopped = false;
    this.video = videoElement("Live video");
    this.hlsVideo = videoElement("Live video (HLS)");
    this.hlsVideo.hidden = true;
    this.message = box.querySelector(".player-message");
    this.mode = document.createElement("span");
    this.mode.className = "player-mode";
    this.mode.setAttribute("role", "status");
    this.mode.hidden = true;
    this.unmute = document.createElement("button");
    this.unmute.type = "button";
    this.unmute.className = "button player-unmute";
    this.unmute.textContent = "Unmute";
    this.unmute.hidden = true;
    this.unmute.addEventListener("click", () => {
      this.video.muted = false;
      this.hlsVideo.muted = false;
      this.unmute.hidden = true;
    });
    box.prepend(this.video, this.hlsVideo);
    box.append(this.mode, this.unmute);
  }

  get playing() {
    return this.hls ? "hls" : this.box.dataset.state === "playing" ? "webrtc" : null;
  }

  setState(state, text) {
    this.box.dataset.state = state;
    this.message.textContent = text;
    const showing = state === "playing" || state === "reconnecting" || Boolean(this.hls);
    this.message.hidden = showing && !text;
    this.video.hidden = Boolean(this.hls) || !showing;
    this.hlsVideo.hidden = !this.hls;
    this.onState(state);
  }

  setMode(mode, why = "") {
    this.box.dataset.mode = mode || "";
    this.mode.hidden = !mode;
    this.mode.textContent = mode ? MODES[mode] : "";
    this.mode.title = why;
  }

  async start() {
    this.stopped = false;
    if (this.prefer === "hls") await this.fallBack("HLS was asked for");
    else await this.connect();
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.closeSession();
    const pc = new RTCPeerConnection();
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
    if (!this.hls) this.setState(this.box.dataset.state === "playing" ? "reconnecting" : "connecting", "Connecting…");
    try {
      this.session = await negotiate(pc, `/whep/${encodeURIComponent(this.channel)}`, this.token);
    } catch (error) {
      if (pc !== this.pc) return;
      this.closeSession();
      if (error instanceof SessionError && error.status === 409) {
        this.stopHls();
        this.setMode(null);
        this.setState("offline", "The channel is offline. Watching for it to go live…");
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
    if (chat) this.onDataChannel(chat);
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.webrtcFailed(pc, "no picture arrived over WebRTC"), CONNECT_TIMEOUT);
    this.video.requestVideoFrameCallback?.(() => {
      if (pc !== this.pc) return;
      clearTimeout(this.watchdog);
      this.failures = 0;
      this.stopHls();
      this.setMode("webrtc");
      this.setState("playing", "");
      this.unmute.hidden = !this.video.muted;
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
    if (!this.hls) {
      this.video.srcObject = null;
      const hls = new HlsPlayback(this.hlsVideo, this.hlsUrl, {
        onError: (detail) => {
          if (this.hls !== hls) return;
          this.setState("error", `HLS stopped (${detail}). Retrying…`);
          this.stopHls();
          this.retry(3000);
        },
      });
      this.hls = hls;
      try {
        await hls.start();
      } catch (error) {
        this.hls = null;
        this.setState("error", error.message);
        return;
      }
    }
    this.setMode("hls", why);
    this.setState("playing", "");
    this.unmute.hidden = !this.hlsVideo.muted;
  }

  stopHls() {
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
    }
  }

  retry(ms) {
    clearTimeout(this.timer);
    if (this.prefer === "hls") return;
    this.timer = setTimeout(() => this.connect(), ms);
  }

  closeSession() {
    clearTimeout(this.watchdog);
    if (this.session) hangUp(this.session.location);
    this.session = null;
    if (this.pc) this.pc.close();
    this.pc = null;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.closeSession();
    this.stopHls();
  }
}
