// DASH playback: dash.js (from npm, served at /vendor/dashjs/) in low-latency mode, for the watch page's
// ?playback=dash and a PLAYBACK_ORDER that names DASH. The same interface as HlsPlayback. Loaded only
// when a viewer needs it.

export class DashPlayback {
  constructor(video, url, { onError = () => {}, onLevels = () => {}, onPlaying = () => {} } = {}) {
    this.video = video;
    this.url = url;
    this.onError = onError;
    this.onLevels = onLevels; // gets [{value, label}] once the renditions are known
    this.onPlaying = onPlaying; // the first frame is showing
    this.player = null;
    this.dashjs = null;
    this.played = false;
    this.stopped = false;
    this.errors = []; // the last errors dash.js reported, [seconds since start, details, fatal]
    this.startedAt = performance.now();
    this.playing = () => {
      if (this.stopped) return;
      this.played = true;
      this.onPlaying();
    };
  }

  async start() {
    const { default: dashjs } = await import("/vendor/dashjs/dash.mediaplayer.min.js");
    if (this.stopped) return; // stopped while dash.js was loading
    if (!window.MediaSource && !window.ManagedMediaSource) throw new Error("this browser plays neither WebRTC nor DASH");
    this.dashjs = dashjs;
    this.video.addEventListener("playing", this.playing);
    const player = dashjs.MediaPlayer().create();
    this.player = player;
    player.updateSettings({
      debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
      streaming: {
        // The MPD's ServiceDescription sets the target latency; catching up plays at most 20 % faster.
        liveCatchup: { enabled: true, maxDrift: 2, playbackRate: { min: -0.2, max: 0.2 } },
        buffer: { bufferTimeAtTopQuality: 4, bufferTimeDefault: 4, bufferToKeep: 20 },
        retryAttempts: { MPD: 8 }, // the ladder starts on the first request: the MPD can take a few seconds
        retryIntervals: { MPD: 1000 },
      },
    });
    const events = dashjs.MediaPlayer.events;
    player.on(events.STREAM_INITIALIZED, () => {
      this.onLevels(player.getRepresentationsByType("video").map((r, index) => ({
        value: String(index),
        label: r.height ? `${Math.min(r.width || r.height, r.height)}p` : `${Math.round(r.bandwidth / 1000)} kbit/s`,
      })));
    });
    player.on(events.ERROR, (event) => {
      const error = event.error || {};
      const detail = error.message || String(error.code || "error");
      this.errors.push([Math.round(performance.now() - this.startedAt) / 1000, detail, true]);
      if (this.errors.length > 20) this.errors.shift();
      // A manifest that cannot be loaded: the channel is not live (the player says "offline").
      const manifest = error.code === 10 || error.code === 25 || /manifest/i.test(detail);
      this.onError(manifest ? `manifestLoadError: ${detail}` : detail);
    });
    player.on(events.PLAYBACK_ENDED, () => {
      if (!this.stopped) this.onError("manifestLoadError: the stream ended");
    });
    player.initialize(this.video, this.url, true);
  }

  /** Play rendition `index`; -1 for automatic. */
  setLevel(index) {
    if (!this.player) return;
    this.player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: index < 0 } } } });
    if (index >= 0) this.player.setRepresentationForTypeByIndex("video", index, true);
  }

  /** The rendition playing: {index, height}. */
  get level() {
    const current = this.player?.getCurrentRepresentationForType("video");
    return current ? { index: current.index, height: current.height || 0 } : null;
  }

  /** Seconds between the newest media and what is shown (dash.js's own figure, on the UTCTiming clock). */
  get latency() {
    const seconds = this.player?.getCurrentLiveLatency();
    return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
  }

  stop() {
    this.stopped = true;
    this.video.removeEventListener("playing", this.playing);
    if (this.player) this.player.destroy();
    this.player = null;
    this.video.removeAttribute("src");
    this.video.load();
  }
}
