// The WHEP player: connects when the channel is live, shows an offline state when not, and reconnects
// by itself when the network blips or the broadcaster comes back.

import { hangUp, negotiate, SessionError } from "./webrtc.js";

export class Player {
  constructor(box, channel, { token = null, onState = () => {}, onDataChannel = null } = {}) {
    this.box = box;
    this.channel = channel;
    this.token = token;
    this.onState = onState;
    this.onDataChannel = onDataChannel; // gets each session's "chat" data channel
    this.pc = null;
    this.session = null;
    this.timer = null;
    this.stopped = false;
    this.video = document.createElement("video");
    this.video.className = "video";
    this.video.autoplay = true;
    this.video.muted = true; // browsers only autoplay muted media; the button below unmutes
    this.video.playsInline = true;
    this.video.setAttribute("aria-label", "Live video");
    this.message = box.querySelector(".player-message");
    this.unmute = document.createElement("button");
    this.unmute.type = "button";
    this.unmute.className = "button player-unmute";
    this.unmute.textContent = "Unmute";
    this.unmute.hidden = true;
    this.unmute.addEventListener("click", () => {
      this.video.muted = false;
      this.unmute.hidden = true;
    });
    box.prepend(this.video);
    box.append(this.unmute);
  }

  setState(state, text) {
    this.box.dataset.state = state;
    this.message.textContent = text;
    this.message.hidden = state === "playing";
    this.video.hidden = state !== "playing" && state !== "reconnecting";
    this.onState(state);
  }

  async start() {
    this.stopped = false;
    await this.connect();
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.close();
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
    this.setState(this.box.dataset.state === "playing" ? "reconnecting" : "connecting", "Connecting…");
    try {
      this.session = await negotiate(pc, `/whep/${encodeURIComponent(this.channel)}`, this.token);
    } catch (error) {
      if (pc !== this.pc) return;
      this.close();
      if (error instanceof SessionError && error.status === 409) {
        this.setState("offline", "The channel is offline. Watching for it to go live…");
        this.retry((error.retryAfter || 5) * 1000);
      } else if (error instanceof SessionError && error.status === 503) {
        this.setState("full", "This server is full right now. Trying again shortly…");
        this.retry((error.retryAfter || 10) * 1000);
      } else {
        this.setState("error", `Could not connect: ${error.message}. Retrying…`);
        this.retry(3000);
      }
      return;
    }
    if (chat) this.onDataChannel(chat);
    this.video.requestVideoFrameCallback?.(() => {
      if (pc === this.pc) {
        this.setState("playing", "");
        this.unmute.hidden = !this.video.muted;
      }
    });
  }

  watchConnection(pc) {
    if (pc !== this.pc) return;
    const state = pc.connectionState;
    if (state === "failed" || state === "closed") {
      this.setState("reconnecting", "Reconnecting…");
      this.retry(500);
    } else if (state === "disconnected") {
      this.setState("reconnecting", "Reconnecting…");
      this.retry(3000); // a blip often heals by itself; if not, start over
    } else if (state === "connected" && this.box.dataset.state === "reconnecting") {
      clearTimeout(this.timer);
      this.setState("playing", "");
    }
  }

  retry(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), ms);
  }

  close() {
    if (this.session) hangUp(this.session.location);
    this.session = null;
    if (this.pc) this.pc.close();
    this.pc = null;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.close();
  }
}
