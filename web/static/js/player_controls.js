// The player's controls: pause, mute and volume, quality, latency, theater, picture-in-picture and
// fullscreen, by mouse, touch and keyboard (space/k pause, m mute, f fullscreen, t theater). The
// transport (WebRTC or HLS) stays in player.js; this only drives the <video> that is showing.

import { el } from "./nav.js";

const KEYS = { " ": "pause", k: "pause", m: "mute", f: "fullscreen", t: "theater" };

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

export class PlayerControls {
  /** `player`: the Player; `theaterRoot`: the element that gets the "theater" class. */
  constructor(player, theaterRoot) {
    this.player = player;
    this.theaterRoot = theaterRoot;
    this.muted = true; // browsers only autoplay muted media
    this.volumeLevel = 1;
    this.paused = false;
    const button = (id, label, onClick) =>
      el("button", { type: "button", id, class: "control", "aria-label": label, title: label, onClick }, "");
    this.pauseButton = button("player-pause", "Pause (k)", () => this.togglePause());
    this.muteButton = button("player-mute", "Unmute (m)", () => this.toggleMute());
    this.volume = el("input", { type: "range", id: "player-volume", class: "volume", min: "0", max: "1", step: "0.05",
      value: "1", "aria-label": "Volume" });
    this.volume.addEventListener("input", () => this.setVolume(Number(this.volume.value)));
    this.quality = el("select", { id: "player-quality", class: "quality", "aria-label": "Quality", hidden: true });
    this.quality.addEventListener("change", () => this.player.setLevel(this.quality.value));
    this.quality.addEventListener("focus", () => this.player.lookAtLayers?.()); // fresh when about to choose
    this.latency = el("span", { id: "player-latency", class: "latency", title: "How far behind the broadcaster you are" }, "");
    this.theaterButton = button("player-theater", "Theater mode (t)", () => this.toggleTheater());
    this.pipButton = button("player-pip", "PiP: picture in picture", () => this.togglePip());
    this.pipButton.hidden = !document.pictureInPictureEnabled;
    this.fullscreenButton = button("player-fullscreen", "Fullscreen (f)", () => this.toggleFullscreen());
    this.fullscreenButton.hidden = !document.fullscreenEnabled;
    this.bar = el("div", { class: "player-controls", role: "group", "aria-label": "Player controls",
      onPointerdown: () => this.show() },
      this.pauseButton, this.muteButton, this.volume, player.mode, el("span", { class: "spacer" }),
      this.latency, this.quality, this.theaterButton, this.pipButton, this.fullscreenButton);
    player.box.append(this.bar);
    this.onKey = (event) => this.key(event);
    this.onFullscreen = () => this.draw();
    document.addEventListener("keydown", this.onKey);
    document.addEventListener("fullscreenchange", this.onFullscreen);
    this.latencyTimer = setInterval(() => this.drawLatency(), 1000);
    this.draw();
  }

  get video() {
    return this.player.activeVideo;
  }

  get shown() {
    return this.player.box.dataset.controls === "shown";
  }

  /** On a touch screen: the controls for a few seconds after a tap (and while one has focus). */
  show() {
    this.player.box.dataset.controls = "shown";
    clearTimeout(this.hideTimer);
    this.hideTimer = setTimeout(() => { delete this.player.box.dataset.controls; }, 4000);
  }

  key(event) {
    const action = KEYS[event.key.toLowerCase()];
    if (!action || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    // Only with the focus in the player or on nothing in particular: space on a link, a button or the
    // chat log does what it does there.
    const target = event.target;
    const inPlayer = target instanceof Node && this.player.box.contains(target);
    if (!inPlayer && target !== document.body && target !== document.documentElement) return;
    if (event.key === " " && target instanceof HTMLButtonElement) return; // presses the focused control
    event.preventDefault();
    if (action === "pause") this.togglePause();
    else if (action === "mute") this.toggleMute();
    else if (action === "fullscreen") this.toggleFullscreen();
    else if (action === "theater") this.toggleTheater();
  }

  /** Pause stops showing frames; a WebRTC session stays connected (resuming is instant and live). */
  togglePause() {
    this.paused = !this.paused;
    for (const video of this.player.videos) {
      if (this.paused) video.pause();
    }
    if (!this.paused) this.video.play().catch(() => null);
    this.player.box.dataset.paused = String(this.paused);
    this.draw();
  }

  toggleMute() {
    this.setMuted(!this.muted);
  }

  setMuted(muted) {
    this.muted = muted;
    if (!muted && this.volumeLevel === 0) this.setVolume(0.5);
    this.apply();
  }

  setVolume(level) {
    this.volumeLevel = Math.min(1, Math.max(0, level));
    this.muted = this.volumeLevel === 0;
    this.apply();
  }

  /** Mute and volume on both videos (the WebRTC one and the HLS one), so a switch keeps them. */
  apply() {
    for (const video of this.player.videos) {
      video.muted = this.muted;
      video.volume = this.volumeLevel;
    }
    this.player.unmute.hidden = !this.muted || this.player.box.dataset.state !== "playing";
    this.draw();
  }

  toggleTheater() {
    const on = this.theaterRoot.classList.toggle("theater");
    this.theaterButton.setAttribute("aria-pressed", String(on));
  }

  async toggleFullscreen() {
    try {
      if (document.fullscreenElement) await document.exitFullscreen();
      else await this.player.box.requestFullscreen();
    } catch {
      // refused (no user gesture, an iframe without permission): nothing to do
    }
  }

  async togglePip() {
    try {
      if (document.pictureInPictureElement) await document.exitPictureInPicture();
      else await this.video.requestPictureInPicture();
    } catch {
      // no picture yet, or refused
    }
  }

  /** The renditions to choose from: [{value, label}] after an automatic choice (`auto`: its value);
   * `selected`: the value chosen now. Fewer than two hides the menu. */
  setLevels(levels, auto = "-1", selected = auto) {
    const same = this.quality.options.length === levels.length + 1
      && levels.every((level, i) => this.quality.options[i + 1].value === level.value);
    if (!same) {
      this.quality.replaceChildren(
        el("option", { value: auto }, "Auto"),
        ...levels.map((level) => el("option", { value: level.value }, level.label)),
      );
    }
    if (document.activeElement !== this.quality) this.quality.value = selected;
    this.quality.hidden = levels.length < 2;
  }

  async drawLatency() {
    const seconds = await this.player.latency().catch(() => null);
    const known = seconds !== null && !Number.isNaN(seconds);
    this.latency.textContent = !known ? "" : seconds < 1 ? `${Math.round(seconds * 1000)} ms behind` : `${seconds.toFixed(1)} s behind`;
    this.latency.dataset.seconds = known ? seconds.toFixed(3) : "";
  }

  draw() {
    const label = (button, text, symbol) => {
      button.setAttribute("aria-label", text);
      button.title = text;
      button.textContent = symbol;
    };
    label(this.pauseButton, this.paused ? "Play (k)" : "Pause (k)", this.paused ? "Play" : "Pause");
    label(this.muteButton, this.muted ? "Unmute (m)" : "Mute (m)", this.muted ? "Unmute" : "Mute");
    this.volume.value = String(this.muted ? 0 : this.volumeLevel);
    label(this.fullscreenButton, document.fullscreenElement ? "Exit fullscreen (f)" : "Fullscreen (f)",
      document.fullscreenElement ? "Exit fullscreen" : "Fullscreen");
    label(this.theaterButton, "Theater mode (t)", "Theater");
    label(this.pipButton, "PiP: picture in picture", "PiP");
  }

  stop() {
    clearInterval(this.latencyTimer);
    clearTimeout(this.hideTimer);
    document.removeEventListener("keydown", this.onKey);
    document.removeEventListener("fullscreenchange", this.onFullscreen);
  }
}
